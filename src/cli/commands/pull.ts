import { logger } from '@libp2p/logger'
import { checkPinName } from '../../store/index.js'
import { parseCid } from '../../dag/hash.js'
import { DiskReader } from '../../dag/index.js'
import { loadNetConfig } from '../../net/config.js'
import { createNode, startNode } from '../../net/node.js'
import { createExchange } from '../../net/exchange/index.js'
import { UsageError } from '../../errors.js'
import type { BlockExchange } from '../../net/interface.js'
import { pullProgress } from '../progress.js'
import type { Command } from '../command.js'
import type { Context } from '../context.js'

const log = logger('collective:pull')

/** Without a daemon, a node of our own for the length of the pull (dials the bootstrap peers first). */
async function withExchange<T> (ctx: Context, values: Record<string, unknown>, fn: (exchange: BlockExchange) => Promise<T>): Promise<T> {
  if (ctx.daemon != null) return await fn(ctx.daemon.exchange)
  const store = await ctx.openStore()
  const net = await loadNetConfig(ctx.dataDir, {
    bootstrap: values.bootstrap as string[] | undefined,
    mdns: values['no-mdns'] === true ? false : undefined
  })
  const libp2p = await createNode({ dataDir: ctx.dataDir, listen: net.listen, bootstrap: net.bootstrap, mdns: net.mdns, signal: ctx.signal })
  await startNode(libp2p)
  const exchange = createExchange({ libp2p, blockstore: store.blocks }, { log: message => { log(message) } })
  try {
    await exchange.start()
    return await fn(exchange)
  } finally {
    await exchange.stop().catch(() => {})
    await Promise.resolve(libp2p.stop()).catch(() => {})
  }
}

function seconds (text: unknown): number | undefined {
  if (text == null) return undefined
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError('--timeout must be a positive number of seconds')
  return n * 1000
}

const command: Command = {
  usage: 'pull <cid> [--name NAME] [--timeout SECONDS] [--bootstrap MULTIADDR]...',
  summary: 'Fetch a root from the swarm (providers found in the DHT and among connected peers, many at once; every block verified) and pin it. Resumes where a killed pull stopped.',
  help: `Options:
  --name NAME            pin name (default: the CID)
  --timeout SECONDS      give up when no peer has provided a missing block for this long (default 30)
  --bootstrap MULTIADDR  without a daemon: peers to dial for this pull (also config.json / COLLECTIVE_BOOTSTRAP)
  --no-mdns              without a daemon: do not look for peers on the LAN
JSON: {"type": "pull:progress", ...} events, then {"root", "size", "blocks", "bytesFetched", "wireBytes", "peers", "name"}`,
  options: {
    name: { type: 'string' },
    timeout: { type: 'string' },
    bootstrap: { type: 'string', multiple: true },
    'no-mdns': { type: 'boolean' }
  },
  positionals: 1,
  async run (ctx, [ref], values) {
    const root = parseCid(ref!)
    const name = checkPinName((values.name as string | undefined) ?? root.toString())
    const findTimeout = seconds(values.timeout)
    const result = await withExchange(ctx, values, async exchange => await exchange.pull(root, {
      signal: ctx.signal,
      findTimeout,
      onProgress: pullProgress(ctx)
    }))
    const store = await ctx.openStore()
    const reader = await DiskReader.open(root, store.blocks)
    await store.pins.set({ name, root: root.toString(), size: reader.size, created: new Date().toISOString() })
    ctx.note(`pulled ${root}: ${result.bytesFetched} bytes fetched (${result.wireBytes} on the wire) from ${result.peers} peers`)
    ctx.say(root.toString())
    ctx.result({ root: root.toString(), size: result.size, blocks: result.blocks, bytesFetched: result.bytesFetched, wireBytes: result.wireBytes, peers: result.peers, name })
  }
}

export default command
