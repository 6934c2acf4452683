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
//
// The floor (--block-bytes N on both sides): the same stream, plus the work every pull must do and
// no protocol at all, to tell what a block protocol could reach at best on this machine.
//   serve: every N-byte slice of the file is hashed (BLAKE3) before it is sent, as a seeder verifies
//          each block it reads before serving it.
//   fetch --store DIR: the stream is cut into N-byte blocks; each is hashed into its CID (BLAKE3, as
//          a pull verifies each block) and put into a real store in DIR (src/store: the pack's direct
//          writes, the LevelDB index, a commit every 16 MiB, as a pull's session does), 256 KiB of
//          blocks per putMany. The timing ends once the last commit has landed.
// --stream-window BYTES (both sides): yamux's most a stream's sender may send ahead (its default:
// 16 MiB). The floor's receiver, slower than its sender, holds that much in buffers that outlive
// scavenges: with 16 MiB every run of the floor is a GC storm; with 4 MiB none is (docs/benchmarks.md).
import '../dist/util/polyfill.js'
import { open } from 'node:fs/promises'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, startNode } from '../dist/net/node.js'
import { processStats } from '../dist/util/process-stats.js'
import { blake3UrlSafeBase64 } from '@napi-rs/blake-hash'
import { rawCid } from '../dist/dag/hash.js'
import { openStore } from '../dist/store/index.js'
import { parseArgs } from './lib.js'

const PROTOCOL = '/collective-bench/raw/1.0.0'
/** The floor's putMany batches and commits: what a pull's session does (src/net/exchange/session.ts). */
const FLOOR_BATCH = 256 * 1024
const FLOOR_COMMIT = 16 * 1024 * 1024
const [mode, ...rest] = process.argv.slice(2)
const args = parseArgs(rest)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const streamWindow = args['stream-window'] != null ? Number(args['stream-window']) : undefined
const node = await createNode({ listen: [String(args.listen ?? '/ip4/127.0.0.1/tcp/0')], mdns: false, streamWindow })
await startNode(node)

if (mode === 'serve') {
  const file = String(args.file)
  const chunk = Number(args.chunk ?? 256 * 1024)
  const blockBytes = args['block-bytes'] != null ? Number(args['block-bytes']) : 0
  await node.handle(PROTOCOL, async (stream) => {
    const fh = await open(file, 'r')
    try {
      let pos = 0
      for (;;) {
        const buf = Buffer.allocUnsafe(chunk) // a fresh buffer: the stream may hold it until sent
        const { bytesRead } = await fh.read(buf, 0, chunk, pos)
        if (bytesRead === 0) break
        pos += bytesRead
        // The floor: each block hashed before it is served (blocks are cut from the file's start).
        if (blockBytes > 0) {
          for (let at = Math.ceil((pos - bytesRead) / blockBytes) * blockBytes; at < pos; at += blockBytes) {
            blake3UrlSafeBase64(buf.subarray(at - (pos - bytesRead), Math.min(at + blockBytes, pos) - (pos - bytesRead)))
          }
        }
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
  const floor = args.store != null ? await floorStore(String(args.store), Number(args['block-bytes'] ?? 0)) : undefined
  for (let i = 0; i < streams; i++) {
    const gc0 = processStats().gc
    const t0 = performance.now()
    const stream = await node.dialProtocol(ma, PROTOCOL)
    let bytes = 0
    if (floor == null) {
      for await (const c of stream) bytes += c.byteLength
    } else {
      bytes = await floor.receive(stream)
    }
    const seconds = (performance.now() - t0) / 1000
    await new Promise((resolve) => setImmediate(resolve)) // the GC observer's last entries
    const gc1 = processStats().gc
    out({ stream: i + 1, bytes, seconds, mibPerSec: bytes / 1048576 / seconds, majorGcs: gc1.major - gc0.major, minorGcs: gc1.minor - gc0.minor })
  }
  await node.stop()
  await floor?.close()
} else {
  console.error('usage: raw-stream-peer.js serve|fetch ...')
  process.exit(2)
}

/** The floor's receiving side: the stream cut into blocks, each hashed and put into a real store. */
async function floorStore (dir, blockBytes) {
  if (!(blockBytes > 0)) throw new Error('--store needs --block-bytes N')
  const store = await openStore(dir)
  return {
    async receive (stream) {
      let bytes = 0
      let block = Buffer.allocUnsafe(blockBytes)
      let filled = 0
      let batch = []
      let batchBytes = 0
      let uncommitted = 0
      let previous = Promise.resolve()
      const commits = []
      // Up to two batches in the store at once, as a session's flushes overlap.
      const flush = async () => {
        const blocks = batch
        batch = []
        uncommitted += batchBytes
        batchBytes = 0
        const put = store.blocks.putMany(blocks, { trusted: true, fresh: true, handOver: true })
        put.catch(() => {}) // reported where it is awaited: the next flush, or the end
        const before = previous
        previous = put
        await before
        if (uncommitted >= FLOOR_COMMIT) {
          uncommitted = 0
          const commit = store.blocks.commitInBackground()
          commit.catch(() => {}) // reported at the end, where they are awaited
          commits.push(commit)
        }
      }
      const add = (bytesOfBlock) => {
        batch.push({ cid: rawCid(bytesOfBlock), bytes: bytesOfBlock })
        batchBytes += bytesOfBlock.length
      }
      for await (const list of stream) {
        for (const c of list instanceof Uint8Array ? [list] : list) {
          bytes += c.byteLength
          let at = 0
          while (at < c.byteLength) {
            // A block inside one chunk is taken as it is (as a frame decoder does); one that spans
            // chunks is copied together.
            if (filled === 0 && c.byteLength - at >= blockBytes) {
              add(c.subarray(at, at + blockBytes))
              at += blockBytes
              continue
            }
            const n = Math.min(blockBytes - filled, c.byteLength - at)
            block.set(c.subarray(at, at + n), filled)
            filled += n
            at += n
            if (filled === blockBytes) {
              add(block)
              block = Buffer.allocUnsafe(blockBytes)
              filled = 0
            }
          }
        }
        if (batchBytes >= FLOOR_BATCH) await flush()
      }
      if (filled > 0) add(block.subarray(0, filled))
      await flush()
      await previous
      await Promise.all(commits)
      await store.blocks.commit()
      return bytes
    },
    async close () { await store.close() }
  }
}
