#!/usr/bin/env node
// A diagnostic host for bench/exchange.js: the same composition as the daemon (src/net/node.ts node,
// the store of a data dir, the block exchange of src/net/exchange) without the control socket, so
// that exchange options the CLI does not expose can be measured (--compression off).
//
//   node bench/exchange-peer.js serve --data-dir D [--listen MULTIADDR] [--compression on|off] [--root CID]
//       with --root, provides it first, as the daemon does for its pins at start, and waits 2 s (its
//       HAVE is then ready before the first peer asks); prints {"type":"ready","peerId","addresses"} once it is;
//       serves until SIGTERM, then prints
//       {"type":"stopped","transfer":{...}}.
//   node bench/exchange-peer.js pull --data-dir D --peer MULTIADDR --root CID [--compression on|off] [--window BYTES]
//       [--max-unstored BYTES] [--buffers-timeline FILE] [--force-gc-at MS]
//       connects (untimed), then times exchange.pull(root); last line {"seconds","mibPerSec",...result,
//       "fullGcs","scavenges","cpuSeconds"} (this process's collections and CPU, all threads, during the pull).
//       --buffers-timeline: writes FILE, one line per 5 ms ("b ms arrayBufferMiB") and per GC
//       ("g ms kind durationMs"; kind 4 a mark-compact, 1 a scavenge), ms since the process started:
//       how the ArrayBuffers rise and fall in a GC storm (docs/benchmarks.md, the exchange section).
//       --force-gc-at: one full GC that many ms into the pull (needs node --expose-gc).
//   --stream-window BYTES (serve and pull): yamux's stream window (default 16 MiB), as in raw-stream-peer.js.
//   EXCHANGE_LOG=1: the exchange's debug log on stderr, each line prefixed with seconds since the
//       process started (the pull's phases: root block, skeleton, all blocks, stored; its state once
//       a second), and the event loop's utilization (the server's every 0.5 s, the pull's over the
//       pull): near 1, that process is the bottleneck.
import '../dist/util/polyfill.js'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, startNode } from '../dist/net/node.js'
import { createExchange } from '../dist/net/exchange/index.js'
import { openStore } from '../dist/store/index.js'
import { parseCid } from '../dist/dag/hash.js'
import { processStats } from '../dist/util/process-stats.js'
import { parseArgs } from './lib.js'
import { writeFileSync } from 'node:fs'
import { PerformanceObserver } from 'node:perf_hooks'

const [mode, ...rest] = process.argv.slice(2)
const args = parseArgs(rest)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const compression = String(args.compression ?? 'on') !== 'off'

const store = await openStore(String(args['data-dir']))
const streamWindow = args['stream-window'] != null ? Number(args['stream-window']) : undefined
const node = await createNode({ listen: [String(args.listen ?? '/ip4/127.0.0.1/tcp/0')], mdns: false, streamWindow })
await startNode(node)
const window = args.window != null ? Number(args.window) : undefined // per-peer request window of a pull
const maxUnstored = args['max-unstored'] != null ? Number(args['max-unstored']) : undefined
const exchange = createExchange({ libp2p: node, blockstore: store.blocks }, { compression, window, maxUnstored, log: process.env.EXCHANGE_LOG ? (m) => console.error(`${(performance.now() / 1000).toFixed(3)} ${m}`) : undefined })
await exchange.start()
const stop = async () => {
  await exchange.stop()
  await node.stop()
  await store.close()
}

if (mode === 'serve') {
  if (args.root != null) {
    // Not awaited: with no DHT peers, provide waits for its query to time out. Its HAVE is computed
    // meanwhile (~0.3-0.7 s for 1 GiB here); the pause covers it.
    void exchange.provide(parseCid(String(args.root)))
    await new Promise((resolve) => setTimeout(resolve, 2000))
  }
  if (process.env.EXCHANGE_LOG) {
    let last = performance.eventLoopUtilization()
    setInterval(() => {
      const now = performance.eventLoopUtilization()
      const u = performance.eventLoopUtilization(now, last).utilization
      last = now
      if (u > 0.02) console.error(`${(performance.now() / 1000).toFixed(3)} serve: event loop utilization ${u.toFixed(2)}`)
    }, 500).unref()
  }
  out({ type: 'ready', peerId: node.peerId.toString(), addresses: node.getMultiaddrs().map(String) })
  await new Promise((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  out({ type: 'stopped', transfer: exchange.stats() })
  await stop()
} else if (mode === 'pull') {
  await node.dial(multiaddr(String(args.peer)))
  const timeline = args['buffers-timeline'] != null ? [] : undefined
  if (timeline != null) {
    setInterval(() => { timeline.push(`b ${performance.now().toFixed(1)} ${(process.memoryUsage().arrayBuffers / 1048576).toFixed(1)}`) }, 5).unref()
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) timeline.push(`g ${e.startTime.toFixed(1)} ${e.detail?.kind} ${e.duration.toFixed(1)}`)
    }).observe({ entryTypes: ['gc'] })
  }
  if (args['force-gc-at'] != null) {
    if (typeof globalThis.gc !== 'function') throw new Error('--force-gc-at needs node --expose-gc')
    setTimeout(() => globalThis.gc(), Number(args['force-gc-at'])).unref()
  }
  const stats0 = processStats()
  const t0 = performance.now()
  const elu0 = performance.eventLoopUtilization()
  if (process.env.EXCHANGE_LOG) console.error(`${(t0 / 1000).toFixed(3)} pull starts`)
  const r = await exchange.pull(parseCid(String(args.root)))
  const seconds = (performance.now() - t0) / 1000
  if (process.env.EXCHANGE_LOG) console.error(`pull: event loop utilization ${performance.eventLoopUtilization(elu0).utilization.toFixed(2)}`)
  await new Promise((resolve) => setImmediate(resolve)) // the GC observer's last entries
  const stats1 = processStats()
  if (timeline != null) writeFileSync(String(args['buffers-timeline']), timeline.join('\n') + '\n')
  await stop()
  out({ seconds, mibPerSec: r.size / 1048576 / seconds, root: r.root.toString(), size: r.size, blocks: r.blocks,
    bytesFetched: r.bytesFetched, wireBytes: r.wireBytes, peers: r.peers, fullGcs: stats1.gc.major - stats0.gc.major, scavenges: stats1.gc.minor - stats0.gc.minor,
    cpuSeconds: stats1.cpuSeconds - stats0.cpuSeconds })
} else {
  console.error('usage: exchange-peer.js serve|pull ...')
  process.exit(2)
}
