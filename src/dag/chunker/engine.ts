import { blake3 } from '@napi-rs/blake-hash'
import { cutPoint, fastcdcBounds } from './fastcdc.js'
import { highMask } from './gear.js'
import { MIN_ZERO_RUN, ZERO_BLOCK, isZero } from './zero.js'
import type { ChunkerParams } from './interface.js'

/**
 * Image bytes per segment at the default chunking: the unit the import reads, chunks (in a worker),
 * hashes and writes. Small enough that the ring of slots stays in the CPU's cache between those
 * stages: on bench-2g, 2 MiB segments imported in 2.1-2.5 s, 8 MiB ones in 3.2-3.7 s (8 rotated rounds).
 */
export const SEGMENT_SIZE = 2 * 1024 * 1024

/**
 * The segment size for `params`: SEGMENT_SIZE, or more for large chunks so that a slot's lookahead
 * (read twice) stays under a quarter of its segment. A power of two, so a multiple of any fixed chunk.
 */
export function segmentSize (params: ChunkerParams): number {
  let segment = SEGMENT_SIZE
  while (segment < 4 * slotLookahead(params) || segment < params.size) segment *= 2
  return segment
}

/** A raw leaf's CID: version 1, codec raw (0x55), multihash BLAKE3 (0x1e) of 32 bytes (0x20), digest. */
export const LEAF_CID_PREFIX = Uint8Array.of(0x01, 0x55, 0x1e, 0x20)
export const LEAF_CID_LENGTH = LEAF_CID_PREFIX.length + 32

/**
 * The chunks that start in one segment, in order, packed in one transferable buffer:
 * `offsets` and `lengths` (float64: holes may be larger than 4 GiB), `cids` (LEAF_CID_LENGTH bytes
 * per chunk, the raw leaf's CID; zeros for a hole), `data` (1 for a data chunk, 0 for a hole).
 */
export interface ChunkBatch {
  count: number
  buffer: ArrayBuffer
}

export interface ChunkBatchViews {
  offsets: Float64Array
  lengths: Float64Array
  cids: Uint8Array
  data: Uint8Array
}

export function batchViews ({ count, buffer }: ChunkBatch): ChunkBatchViews {
  return {
    offsets: new Float64Array(buffer, 0, count),
    lengths: new Float64Array(buffer, 8 * count, count),
    cids: new Uint8Array(buffer, 16 * count, LEAF_CID_LENGTH * count),
    data: new Uint8Array(buffer, (16 + LEAF_CID_LENGTH) * count, count)
  }
}

class BatchBuilder {
  private readonly hash: boolean
  private readonly offsets: number[] = []
  private readonly lengths: number[] = []
  private readonly data: number[] = []
  private cids = new Uint8Array(LEAF_CID_LENGTH * 1024)

  constructor (hash: boolean) {
    this.hash = hash
  }

  hole (offset: number, length: number): void {
    this.offsets.push(offset)
    this.lengths.push(length)
    this.data.push(0)
  }

  chunk (offset: number, length: number, bytes: Uint8Array): void {
    const i = this.offsets.length
    this.offsets.push(offset)
    this.lengths.push(length)
    this.data.push(1)
    if ((i + 1) * LEAF_CID_LENGTH > this.cids.length) {
      const grown = new Uint8Array(this.cids.length * 2)
      grown.set(this.cids)
      this.cids = grown
    }
    const at = i * LEAF_CID_LENGTH
    this.cids.set(LEAF_CID_PREFIX, at)
    if (this.hash) this.cids.set(blake3(bytes), at + LEAF_CID_PREFIX.length)
  }

  finish (): ChunkBatch {
    const count = this.offsets.length
    const batch = { count, buffer: new ArrayBuffer((17 + LEAF_CID_LENGTH) * count) }
    const views = batchViews(batch)
    views.offsets.set(this.offsets)
    views.lengths.set(this.lengths)
    views.cids.set(this.cids.subarray(0, count * LEAF_CID_LENGTH))
    views.data.set(this.data)
    return batch
  }
}

/**
 * The chunkers of fixed.ts and fastcdc.ts as a synchronous state machine over segments, hashing each
 * data chunk unless told not to (`hashBatch` does it later): the same chunks, in the same order
 * (test/dag/engine.spec.ts checks it against them), so it can run in a worker thread fed with
 * segments read by the main thread.
 *
 * Segment k is image bytes [k*segment, (k+1)*segment). Its slot holds the segment plus `lookahead`
 * bytes of the next one (read twice, a few percent more reading), so every chunk that starts in a
 * segment lies whole in its slot: the chunk's bytes can be written straight from the slot. Only a
 * hole may run on over many segments; it is reported, as one chunk, in the segment where it ends.
 */
export class ChunkEngine {
  readonly params: ChunkerParams
  readonly size: number
  readonly segment: number
  readonly lookahead: number
  /** False: data chunks are left for `hashBatch` (their CIDs hold zeros instead of a digest). */
  readonly hash: boolean
  private pos = 0
  // FastCDC: the zero-run scanner (as in fastcdc.ts) and, while a hole runs past a slot, its end so far.
  private scanned = 0
  private runStart = -1
  private nextHole = -1
  private holeEnd = -1
  private next = 0
  private readonly min: number
  private readonly avg: number
  private readonly max: number
  private readonly maskS: number
  private readonly maskL: number

  constructor (params: ChunkerParams, size: number, segment = segmentSize(params), options: { hash?: boolean } = {}) {
    this.params = params
    this.hash = options.hash ?? true
    this.size = size
    this.segment = segment
    this.lookahead = slotLookahead(params)
    if (segment % ZERO_BLOCK !== 0 || (params.kind === 'fixed' && segment % params.size !== 0)) {
      throw new Error(`segment size ${segment} is not a multiple of the chunk size`)
    }
    const { min, avg, max } = fastcdcBounds(params.size)
    this.min = min
    this.avg = avg
    this.max = max
    const bits = Math.log2(avg)
    this.maskS = highMask(bits + 2)
    this.maskL = highMask(bits - 2)
  }

  get segments (): number {
    return Math.ceil(this.size / this.segment)
  }

  /** The image bytes slot k must hold: [start, start + length). */
  slot (k: number): { start: number, length: number } {
    const start = k * this.segment
    return { start, length: Math.min(this.segment + this.lookahead, this.size - start) }
  }

  /** The chunks that start in segment k (or a hole that ends in it); segments go in order. */
  run (k: number, buf: Uint8Array): ChunkBatch {
    if (k !== this.next) throw new Error(`segment ${k} out of order (expected ${this.next})`)
    const { start, length } = this.slot(k)
    if (buf.length < length) throw new Error(`slot ${k} holds ${buf.length} bytes, needs ${length}`)
    this.next++
    const out = new BatchBuilder(this.hash)
    const limit = Math.min(start + this.segment, this.size)
    if (this.params.kind === 'fixed') this.runFixed(buf, start, limit, out)
    else this.runFastcdc(buf, start, start + length, limit, out)
    return out.finish()
  }

  private runFixed (buf: Uint8Array, start: number, limit: number, out: BatchBuilder): void {
    const chunk = this.params.size
    let pos = this.pos
    while (pos < limit) {
      const length = Math.min(chunk, this.size - pos)
      const i = pos - start
      if (isZero(buf, i, i + length)) out.hole(pos, length)
      else out.chunk(pos, length, buf.subarray(i, i + length))
      pos += length
    }
    this.pos = pos
  }

  private runFastcdc (buf: Uint8Array, start: number, bufEnd: number, limit: number, out: BatchBuilder): void {
    if (this.holeEnd >= 0 && !this.extendHole(buf, start, bufEnd, out)) return
    const { min, avg, max, maskS, maskL, size } = this
    while (this.pos < limit) {
      const pos = this.pos
      this.scanZeros(buf, start, pos + max + MIN_ZERO_RUN)
      if (this.nextHole === pos) {
        this.holeEnd = this.scanned
        if (!this.extendHole(buf, start, bufEnd, out)) return
        continue
      }
      let end = Math.min(pos + max, size)
      if (this.nextHole > pos && this.nextHole < end) end = this.nextHole
      const i = pos - start
      const cut = cutPoint(buf, i, i + (end - pos), min, avg, maskS, maskL) - i
      if (isZero(buf, i, i + cut)) out.hole(pos, cut)
      else out.chunk(pos, cut, buf.subarray(i, i + cut))
      this.pos = pos + cut
    }
  }

  /** fastcdc.ts's scanZeros, over the slot starting at image offset `start`. */
  private scanZeros (buf: Uint8Array, start: number, limit: number): void {
    limit = Math.min(Math.ceil(limit / ZERO_BLOCK) * ZERO_BLOCK, this.size)
    if (this.nextHole >= 0 || this.scanned >= limit) return
    let scanned = this.scanned
    let p = scanned - start
    while (scanned < limit) {
      const n = Math.min(ZERO_BLOCK, this.size - scanned)
      if (isZero(buf, p, p + n)) {
        if (this.runStart < 0) this.runStart = scanned
        scanned += n
        if (scanned - this.runStart >= MIN_ZERO_RUN) {
          this.nextHole = this.runStart
          break
        }
      } else {
        this.runStart = -1
        scanned += n
      }
      p += n
    }
    this.scanned = scanned
  }

  /**
   * Extends the hole starting at `pos` over every following zero block. False when the slot ends
   * first: the hole goes on in the next one.
   */
  private extendHole (buf: Uint8Array, start: number, bufEnd: number, out: BatchBuilder): boolean {
    let end = this.holeEnd
    while (end < this.size) {
      const n = Math.min(ZERO_BLOCK, this.size - end)
      if (end + n > bufEnd) {
        this.holeEnd = end
        return false
      }
      if (!isZero(buf, end - start, end - start + n)) break
      end += n
    }
    out.hole(this.pos, end - this.pos)
    this.pos = end
    this.scanned = end
    this.runStart = -1
    this.nextHole = -1
    this.holeEnd = -1
    return true
  }
}

/**
 * Hashes the data chunks of a batch made without hashing (`hash: false`), from the slot `buf` that
 * holds image offset `start`: the batch then holds what a hashing engine would have made.
 */
export function hashBatch (views: ChunkBatchViews, count: number, buf: Uint8Array, start: number): void {
  const { offsets, lengths, cids, data } = views
  for (let i = 0; i < count; i++) {
    if (data[i] === 0) continue
    const at = offsets[i]! - start
    cids.set(blake3(buf.subarray(at, at + lengths[i]!)), i * LEAF_CID_LENGTH + LEAF_CID_PREFIX.length)
  }
}

/** Bytes a slot holds past its segment: the most a chunk starting in it, and its zero scan, reach. */
export function slotLookahead (params: ChunkerParams): number {
  if (params.kind === 'fixed') return 0
  return fastcdcBounds(params.size).max + MIN_ZERO_RUN + ZERO_BLOCK
}
