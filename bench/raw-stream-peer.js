#!/usr/bin/env node
// The baseline of bench/exchange.js: one raw libp2p stream carrying a file's bytes between two nodes
// built by the project's own factory (src/net/node.ts: TCP, noise, yamux, identify, ping, kad-dht,
// gossipsub), each in its own process. No block protocol, no store, no hashing: the upper bound of
// what the block exchange can get out of this libp2p stack.
//
//   node bench/raw-stream-peer.js serve --file PATH [--listen MULTIADDR] [--chunk BYTES]
//       prints {"type":"ready","peerId","addresses"}; every stream on /collective-bench/raw/1.0.0
//       receives the whole file (read in --chunk pieces, default 256 KiB, sent with backpressure);
//       stops on SIGTERM/SIGINT.
//   node bench/raw-stream-peer.js fetch --peer MULTIADDR [--listen MULTIADDR] [--streams N]
//       connects (untimed), then times opening one stream and reading it to its end, N times in a
//       row (default 1; the later ones run warm); one line per stream {"stream","bytes","seconds","mibPerSec",
//       "majorGcs","minorGcs"} (the fetch process's collections during the stream).
import '../dist/util/polyfill.js'
import { open } from 'node:fs/promises'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, startNode } from '../dist/net/node.js'
import { processStats } from '../dist/util/process-stats.js'
import { parseArgs } from './lib.js'

const PROTOCOL = '/collective-bench/raw/1.0.0'
const [mode, ...rest] = process.argv.slice(2)
const args = parseArgs(rest)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const node = await createNode({ listen: [String(args.listen ?? '/ip4/127.0.0.1/tcp/0')], mdns: false })
await startNode(node)

if (mode === 'serve') {
  const file = String(args.file)
  const chunk = Number(args.chunk ?? 256 * 1024)
  await node.handle(PROTOCOL, async (stream) => {
    const fh = await open(file, 'r')
    try {
      let pos = 0
      for (;;) {
        const buf = Buffer.allocUnsafe(chunk) // a fresh buffer: the stream may hold it until sent
        const { bytesRead } = await fh.read(buf, 0, chunk, pos)
        if (bytesRead === 0) break
        pos += bytesRead
        if (!stream.send(buf.subarray(0, bytesRead))) await stream.onDrain()
      }
      await stream.close()
    } catch (err) {
      stream.abort(err)
    } finally {
      await fh.close()
    }
  }, { maxInboundStreams: 8 })
  out({ type: 'ready', peerId: node.peerId.toString(), addresses: node.getMultiaddrs().map(String) })
  await new Promise((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  await node.stop()
} else if (mode === 'fetch') {
  const ma = multiaddr(String(args.peer))
  await node.dial(ma) // connection set up outside the timing, as the daemons are connected before a pull
  const streams = Math.max(1, Number(args.streams ?? 1))
  for (let i = 0; i < streams; i++) {
    const gc0 = processStats().gc
    const t0 = performance.now()
    const stream = await node.dialProtocol(ma, PROTOCOL)
    let bytes = 0
    for await (const c of stream) bytes += c.byteLength
    const seconds = (performance.now() - t0) / 1000
    await new Promise((resolve) => setImmediate(resolve)) // the GC observer's last entries
    const gc1 = processStats().gc
    out({ stream: i + 1, bytes, seconds, mibPerSec: bytes / 1048576 / seconds, majorGcs: gc1.major - gc0.major, minorGcs: gc1.minor - gc0.minor })
  }
  await node.stop()
} else {
  console.error('usage: raw-stream-peer.js serve|fetch ...')
  process.exit(2)
}
