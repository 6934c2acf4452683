import { basename } from 'node:path'
import { openImage } from './source/index.js'
import { DEFAULT_CHUNKER } from './chunker/index.js'
import { LEAF_CID_LENGTH, batchViews, hashBatch, segmentSize, type ChunkBatch } from './chunker/engine.js'
import { InlineStage, WorkerStage, chunkWorkerScript, type ChunkStage } from './chunk-stage.js'
import { LayoutBuilder, type EncodedBlock } from './layout.js'
import { DEFAULT_FANOUT } from './node.js'
import { blockId, leafCidFromBytes } from './hash.js'
import { throwIfAborted } from '../util/abort.js'
import type { ChunkerParams } from './chunker/interface.js'
import type { Blockstore } from '../store/blockstore.js'
import type { CID } from 'multiformats/cid'

/**
 * Slots in the ring the image is read into (one segment each, plus a chunk's lookahead): segments
 * being read, chunked and written at the same time. Memory: ~8.4 MiB at the default chunking (8 slots
 * were no faster).
 */
const SLOTS = 4
// With a worker, the main thread hashes the chunks: the worker's FastCDC scan is the longest stage
// (bench-2g, CPU per thread: worker 1.92 s and main 0.86 s when the worker hashed; 1.41 s and 1.29 s
// when the main thread does), and the main thread was idle for most of the import.

/** Images smaller than this are chunked inline (a worker answers its first segment after ~35 ms). */
const WORKER_MIN_BYTES = 32 * 1024 * 1024
/** Progress events: at most one per this many bytes scanned (and one at the end). */
const PROGRESS_BYTES = 8 * 1024 * 1024

export type ImportProgressEvent =
  | { type: 'import:start', size: number, format: string }
  | { type: 'import:progress', scanned: number, size: number, bytesStored: number }

export interface ImportOptions {
  chunker?: ChunkerParams
  fanout?: number
  /** Forced image format (default: detected). */
  format?: string
  /** Where a temporary raw conversion may go when an image cannot be read in place. */
  tmpDir: string
  signal?: AbortSignal
  onProgress?(event: ImportProgressEvent): void
  /**
   * Where the chunker runs: on a worker thread, inline, or (`auto`, the default) on a worker when
   * the compiled worker script exists and the image is at least 32 MiB. Same result either way.
   */
  threads?: 'auto' | 'worker' | 'inline'
  /** Segment size (tests use small ones to cross many segment boundaries); default segmentSize(). */
  segment?: number
}

export interface ImportResult {
  root: CID
  size: number
  format: string
  /** Distinct blocks in the DAG (leaves and nodes). */
  blocks: number
  /** Bytes this import added to the store (0 when every block was already there). */
  bytesStored: number
}

/**
 * Imports a disk image: chunk, hash, store new blocks, build the DAG. The result is durable (the
 * store is committed) but not pinned: the caller pins it, so a crash never leaves a pin without its
 * blocks. Re-importing after a crash reuses every block already committed.
 *
 * A pipeline over segments of the image, each in a slot of a small ring: the main thread reads
 * segments ahead into free slots, the chunk stage (a worker thread) cuts them into chunks in order,
 * and the main thread hashes the chunks, lays out the DAG and hands each segment's new blocks to the
 * store, written straight from the slot; a slot is reused once its blocks are written. Memory stays
 * bounded by the ring, and the store's ordering (pack written and synced before it is indexed) is
 * unchanged.
 */
export async function importImage (store: Blockstore, path: string, options: ImportOptions): Promise<ImportResult> {
  const params = options.chunker ?? DEFAULT_CHUNKER
  const source = await openImage(path, { format: options.format, tmpDir: options.tmpDir })
  try {
    options.onProgress?.({ type: 'import:start', size: source.size, format: source.format })
    const segment = options.segment ?? segmentSize(params)
    const segments = Math.ceil(source.size / segment)
    const threads = options.threads ?? 'auto'
    const script = threads === 'inline' ? undefined : chunkWorkerScript()
    if (threads === 'worker' && script == null) throw new Error('the chunk worker script is not built (run npm run build)')
    const slots = Math.min(SLOTS, segments)
    const stage: ChunkStage = script != null && (threads === 'worker' || source.size >= WORKER_MIN_BYTES)
      ? new WorkerStage(params, source.size, segment, slots, script, { hash: false })
      : new InlineStage(params, source.size, segment, slots)
    try {
      return await runPipeline(store, source.size, params, stage, options)
    } finally {
      await stage.close()
    }
  } finally {
    await source.close()
  }

  async function runPipeline (store: Blockstore, size: number, params: ChunkerParams, stage: ChunkStage, options: ImportOptions): Promise<ImportResult> {
    const engine = stage.engine
    const segments = engine.segments
    const seen = new Set<string>()
    let blocks: EncodedBlock[] = []
    const queue = (block: EncodedBlock): void => {
      const id = blockId(block.cid)
      if (seen.has(id)) return
      seen.add(id)
      blocks.push(block)
    }
    const layout = new LayoutBuilder(size, params, options.fanout ?? DEFAULT_FANOUT, queue)
    let bytesStored = 0

    // Everything started and not yet settled: waited for before the source and the slots go away.
    const inflight = new Set<Promise<unknown>>()
    const track = <T>(p: Promise<T>): Promise<T> => {
      inflight.add(p)
      const done = (): void => { inflight.delete(p) }
      p.then(done, done)
      return p
    }
    let fail!: (err: unknown) => void
    const failure = new Promise<never>((_resolve, reject) => { fail = reject })
    failure.catch(() => {})

    const free = stage.slots.map((_, i) => i)
    const slotOf: number[] = []
    // Segment k's chunks, once it is read and chunked (created on first use: the loop below may ask
    // for a segment whose read waits for a free slot).
    const batches: Array<Deferred<ChunkBatch>> = []
    const batchOf = (k: number): Deferred<ChunkBatch> => (batches[k] ??= deferred<ChunkBatch>())
    let started = 0
    let stopped = false
    let posted: Promise<unknown> = Promise.resolve()
    const startReads = (): void => {
      while (!stopped && started < segments && free.length > 0) {
        const k = started++
        const slot = free.shift()!
        slotOf[k] = slot
        const { start, length } = engine.slot(k)
        const read = track(source.read(stage.slots[slot]!.subarray(0, length), length, start))
        // Segments go to the chunk stage in order, each as soon as it is read.
        const post = Promise.all([read, posted]).then(() => ({ batch: stage.run(k, slot) }))
        posted = post.then(() => {}, () => {})
        const result = batchOf(k)
        post.then(async ({ batch }) => await batch).then(result.resolve, result.reject)
      }
    }
    const puts = new Set<Promise<void>>()
    let scanned = 0
    let reported = 0
    try {
      startReads()
      for (let k = 0; k < segments; k++) {
        throwIfAborted(options.signal)
        const batch = await Promise.race([batchOf(k).promise, failure])
        delete batches[k]
        const slot = slotOf[k]!
        const buf = stage.slots[slot]!
        const { start } = engine.slot(k)
        const views = batchViews(batch)
        if (!stage.hashes) hashBatch(views, batch.count, buf, start)
        const { offsets, lengths, cids, data } = views
        blocks = []
        for (let i = 0; i < batch.count; i++) {
          const offset = offsets[i]!
          const length = lengths[i]!
          scanned = Math.max(scanned, offset + length)
          if (data[i] === 0) {
            layout.addLeaf(offset, length, null)
            continue
          }
          const cid = leafCidFromBytes(cids.subarray(i * LEAF_CID_LENGTH, (i + 1) * LEAF_CID_LENGTH))
          const id = blockId(cid)
          if (!seen.has(id)) {
            seen.add(id)
            blocks.push({ cid, bytes: buf.subarray(offset - start, offset - start + length) })
          }
          layout.addLeaf(offset, length, cid)
        }
        // Handed to the store at once: its index lookups overlap the write ahead of it (the store
        // writes one call at a time, in call order), while the next segments are read and chunked.
        // The slot is reused once its blocks are in the pack.
        const at = scanned
        const put = (blocks.length > 0 ? store.putMany(blocks, { trusted: true }) : Promise.resolve({ bytes: 0 })).then(result => {
          bytesStored += result.bytes
          free.push(slot)
          startReads()
          if (at - reported >= PROGRESS_BYTES) {
            reported = at
            options.onProgress?.({ type: 'import:progress', scanned: at, size, bytesStored })
          }
        })
        puts.add(track(put))
        put.then(() => puts.delete(put), fail)
      }
      blocks = []
      const root = layout.finish()
      await Promise.all([...puts])
      bytesStored += (await store.putMany(blocks, { trusted: true })).bytes
      await store.commit()
      options.onProgress?.({ type: 'import:progress', scanned: size, size, bytesStored })
      return { root: root.cid, size, format: source.format, blocks: seen.size, bytesStored }
    } finally {
      // On failure: no read may still fill a slot, or use the source, once we return.
      stopped = true
      while (inflight.size > 0) await Promise.allSettled([...inflight])
    }
  }
}

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (err: unknown) => void
}

function deferred<T> (): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => {})
  return { promise, resolve, reject }
}

/** The pin name an image gets when none is given: its file name without the extension. */
export function defaultName (path: string): string {
  return basename(path).replace(/\.(img|raw|qcow2|vmdk|vdi|vhdx|vpc|iso)$/i, '').replace(/[^A-Za-z0-9._@:+-]/g, '_').replace(/^[^A-Za-z0-9]+/, '') || 'image'
}
