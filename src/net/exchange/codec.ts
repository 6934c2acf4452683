/**
 * Wire codecs for batches of blocks (issues 3 and 5). Self-contained: nothing here knows frames,
 * sessions or CIDs; the caller sends one payload per batch of blocks and verifies each block it gets
 * back against the CID it asked for.
 *
 * API
 *
 *   type CodecName = 'zstd-batch' | 'deflate-1' | 'none'
 *   interface Codec {
 *     readonly name: CodecName
 *     encode (blocks: readonly Uint8Array[]): Uint8Array                     // 1..MAX_BATCH_BLOCKS blocks
 *     decode (payload: Uint8Array, maxOutputBytes: number): Uint8Array[]     // throws ProtocolError
 *   }
 *   localCodecs (): CodecName[]          // what this process can use, best first: list it in HELLO
 *   negotiate (ours, theirs): Codec      // the first of `ours` that `theirs` lists; NONE if none
 *                                        // (both ends agree when both list localCodecs())
 *   getCodec (name: string): Codec | undefined
 *   maxEncodedSize (blockLengths): number  // worst-case payload bytes for these blocks (frame budget)
 *
 * Codecs
 *
 * - `zstd-batch`: the blocks of a batch, concatenated in the order given, as ONE zstd frame (level 3,
 *   native zstd 1.5.7 from @toondepauw/node-zstd). Context across the blocks of a batch is where the
 *   gain is: on the update-v1 -> v2 diff (427.6 MiB raw, docs/benchmarks.md "Update bytes") batches
 *   of 32 consecutive blocks (<= 1 MiB) go to 111.2 MiB = 0.79x casync, where zstd-3 per block keeps
 *   128 MiB and DEFLATE-1 per block 139 MiB. The batch size matters: 16 blocks give 114.4 MiB
 *   (0.81x, short of the 0.8x goal), 64 give 109.8. Send batches of 32+ consecutive blocks (in the
 *   order asked: rarest first is DAG order from one source) up to ~1 MiB. Compresses at ~2-2.5x
 *   DEFLATE-1's speed (~260-320 MiB/s of raw input on one core here), decompresses at ~3x. A batch
 *   whose blocks all look incompressible (first 1 KiB) goes stored without a try. Offered only when
 *   the native binding loads (`localCodecs()`).
 * - `deflate-1`: each block raw DEFLATE level 1 on its own, skipped when its first 1 KiB looks
 *   incompressible or when it does not shrink: the compression the exchange used so far, built in.
 * - `none`: the blocks as they are. Every codec may send a batch stored when compressing does not pay,
 *   and every decoder accepts that.
 *
 * Payload (all codecs)
 *
 *   method:u8  count:varint  length_1..length_count:varint  [deflate only: clen_1..clen_count:varint]  body
 *
 *   method 0 stored: body = the blocks concatenated.
 *   method 1 deflate: body = per block, clen_i bytes of raw DEFLATE, or length_i bytes as is when clen_i = 0.
 *   method 2 zstd: body = exactly one zstd frame whose Frame_Content_Size is Σ length_i.
 *   varints are unsigned LEB128, at most 3 bytes (values < 2^21).
 *
 * Bounds (a hostile peer): `decode` checks the header before touching the body: 1..MAX_BATCH_BLOCKS
 * blocks, each at most MAX_BLOCK_SIZE, and Σ length_i <= maxOutputBytes, else ProtocolError and
 * nothing is allocated. Output is then bounded by Σ length_i: DEFLATE inflates with maxOutputLength =
 * length_i; a zstd frame must declare its content size (= Σ length_i; frames without one are refused,
 * since the binding would stream them unbounded), be a single frame filling the body exactly (the
 * block headers are walked first, which also rejects most truncations and garbage without running
 * the decoder), use no dictionary and a window <= MAX_WINDOW; the binding then decodes into a buffer
 * of the declared size and fails if the data would exceed it. Any decoder error is a ProtocolError.
 * The blocks returned may be views into `payload` (stored) or into one decoded buffer.
 */
import { createRequire } from 'node:module'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { MAX_BLOCK_SIZE } from '../../dag/node.js'
import { looksIncompressible } from '../../dag/wire.js'
import { ProtocolError } from './frames.js'

export type CodecName = 'zstd-batch' | 'deflate-1' | 'none'

export interface Codec {
  readonly name: CodecName
  /** One payload for the batch. Throws RangeError for 0 or more than MAX_BATCH_BLOCKS blocks, or a block over MAX_BLOCK_SIZE. */
  encode (blocks: readonly Uint8Array[]): Uint8Array
  /** The blocks of a payload, in the order encoded. ProtocolError for anything malformed or larger than `maxOutputBytes` in all. */
  decode (payload: Uint8Array, maxOutputBytes: number): Uint8Array[]
}

/** Blocks per payload accepted (the sender chooses fewer: see maxEncodedSize for a frame budget). */
export const MAX_BATCH_BLOCKS = 1024
/** Largest zstd window accepted in a frame header (a batch that fits a frame needs far less). */
export const MAX_WINDOW = 8 * 1024 * 1024
/** zstd level used by `zstd-batch` (3: zstd's default; 5 saves 2-3 % more at half the speed). */
export const ZSTD_LEVEL = 3

const METHOD_STORED = 0
const METHOD_DEFLATE = 1
const METHOD_ZSTD = 2

// ---- varints ----

export function varintLength (n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : 3
}

export function writeVarint (out: Uint8Array, offset: number, n: number): number {
  while (n >= 0x80) {
    out[offset++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[offset++] = n
  return offset
}

class Reader {
  offset = 0
  constructor (readonly bytes: Uint8Array) {}
  varint (what: string): number {
    let value = 0
    for (let i = 0; i < 3; i++) {
      if (this.offset >= this.bytes.length) throw new ProtocolError(`codec payload truncated in ${what}`)
      const byte = this.bytes[this.offset++]!
      value |= (byte & 0x7f) << (7 * i)
      if ((byte & 0x80) === 0) return value
    }
    throw new ProtocolError(`codec payload: ${what} varint too long`)
  }
}

// ---- header ----

interface Header {
  method: number
  lengths: number[]
  total: number
  /** Where the rest (clens for deflate, else the body) starts. */
  offset: number
}

function checkBlocks (blocks: readonly Uint8Array[]): number {
  if (blocks.length === 0 || blocks.length > MAX_BATCH_BLOCKS) throw new RangeError(`a batch has 1..${MAX_BATCH_BLOCKS} blocks, not ${blocks.length}`)
  let total = 0
  for (const b of blocks) {
    if (b.length > MAX_BLOCK_SIZE) throw new RangeError(`block of ${b.length} bytes exceeds ${MAX_BLOCK_SIZE}`)
    total += b.length
  }
  return total
}

function headerLength (blocks: readonly Uint8Array[]): number {
  let n = 1 + varintLength(blocks.length)
  for (const b of blocks) n += varintLength(b.length)
  return n
}

function writeHeader (out: Uint8Array, method: number, blocks: readonly Uint8Array[]): number {
  out[0] = method
  let offset = writeVarint(out, 1, blocks.length)
  for (const b of blocks) offset = writeVarint(out, offset, b.length)
  return offset
}

function readHeader (payload: Uint8Array, maxOutputBytes: number): Header {
  if (!(maxOutputBytes >= 0)) throw new RangeError(`maxOutputBytes must be a number >= 0, not ${maxOutputBytes}`)
  if (payload.length < 1) throw new ProtocolError('empty codec payload')
  const r = new Reader(payload)
  const method = payload[r.offset++]!
  const count = r.varint('block count')
  if (count < 1 || count > MAX_BATCH_BLOCKS) throw new ProtocolError(`codec payload of ${count} blocks (1..${MAX_BATCH_BLOCKS})`)
  const lengths = new Array<number>(count)
  let total = 0
  for (let i = 0; i < count; i++) {
    const n = r.varint('block length')
    if (n > MAX_BLOCK_SIZE) throw new ProtocolError(`block of ${n} bytes exceeds ${MAX_BLOCK_SIZE}`)
    lengths[i] = n
    total += n
  }
  if (total > maxOutputBytes) throw new ProtocolError(`codec payload declares ${total} bytes, over the ${maxOutputBytes} allowed`)
  return { method, lengths, total, offset: r.offset }
}

/** Splits `bytes` (exactly Σ lengths long) into views, one per block. */
function split (bytes: Uint8Array, lengths: readonly number[]): Uint8Array[] {
  const out = new Array<Uint8Array>(lengths.length)
  let offset = 0
  for (let i = 0; i < lengths.length; i++) {
    out[i] = bytes.subarray(offset, offset + lengths[i]!)
    offset += lengths[i]!
  }
  return out
}

function encodeStored (blocks: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(headerLength(blocks) + total)
  let offset = writeHeader(out, METHOD_STORED, blocks)
  for (const b of blocks) {
    out.set(b, offset)
    offset += b.length
  }
  return out
}

function decodeStored (payload: Uint8Array, h: Header): Uint8Array[] {
  if (payload.length - h.offset !== h.total) throw new ProtocolError(`stored payload has ${payload.length - h.offset} body bytes, declares ${h.total}`)
  return split(payload.subarray(h.offset), h.lengths)
}

/** Worst-case payload bytes for blocks of these lengths, under any codec (stored + the largest header). */
export function maxEncodedSize (blockLengths: readonly number[]): number {
  let n = 1 + varintLength(blockLengths.length)
  for (const len of blockLengths) n += 2 * varintLength(len) + len
  return n
}

// ---- incompressible data: the rule of src/dag/wire.ts (byte entropy of the first 1 KiB) ----

export { looksIncompressible }

// ---- none ----

const NONE: Codec = {
  name: 'none',
  encode (blocks) { return encodeStored(blocks, checkBlocks(blocks)) },
  decode (payload, maxOutputBytes) {
    const h = readHeader(payload, maxOutputBytes)
    if (h.method !== METHOD_STORED) throw new ProtocolError(`codec method ${h.method} not negotiated (none)`)
    return decodeStored(payload, h)
  }
}

// ---- deflate-1 ----

const DEFLATE_1: Codec = {
  name: 'deflate-1',
  encode (blocks) {
    const total = checkBlocks(blocks)
    const packed = blocks.map(b => {
      if (b.length === 0 || looksIncompressible(b)) return undefined
      const c = deflateRawSync(b, { level: 1 })
      return c.length < b.length ? c : undefined
    })
    if (packed.every(c => c == null)) return encodeStored(blocks, total)
    let size = headerLength(blocks)
    for (let i = 0; i < blocks.length; i++) {
      const c = packed[i]
      size += c == null ? 1 + blocks[i]!.length : varintLength(c.length) + c.length
    }
    const out = new Uint8Array(size)
    let offset = writeHeader(out, METHOD_DEFLATE, blocks)
    for (const c of packed) offset = writeVarint(out, offset, c?.length ?? 0)
    for (let i = 0; i < blocks.length; i++) {
      const body = packed[i] ?? blocks[i]!
      out.set(body, offset)
      offset += body.length
    }
    return out
  },
  decode (payload, maxOutputBytes) {
    const h = readHeader(payload, maxOutputBytes)
    if (h.method === METHOD_STORED) return decodeStored(payload, h)
    if (h.method !== METHOD_DEFLATE) throw new ProtocolError(`codec method ${h.method} not negotiated (deflate-1)`)
    const r = new Reader(payload)
    r.offset = h.offset
    const clens = h.lengths.map(len => {
      const c = r.varint('compressed length')
      if (c > len) throw new ProtocolError(`deflated block of ${c} bytes for ${len}`)
      return c
    })
    let offset = r.offset
    const out = new Array<Uint8Array>(h.lengths.length)
    for (let i = 0; i < h.lengths.length; i++) {
      const len = h.lengths[i]!
      const c = clens[i]!
      const stored = c === 0
      const end = offset + (stored ? len : c)
      if (end > payload.length) throw new ProtocolError('deflate payload truncated')
      const bytes = payload.subarray(offset, end)
      offset = end
      if (stored) { out[i] = bytes; continue }
      let inflated: Uint8Array
      try {
        inflated = inflateRawSync(bytes, { maxOutputLength: len })
      } catch (err) {
        throw new ProtocolError(`bad deflate block: ${(err as Error).message}`)
      }
      if (inflated.length !== len) throw new ProtocolError(`deflate block inflated to ${inflated.length} bytes, declared ${len}`)
      out[i] = inflated
    }
    if (offset !== payload.length) throw new ProtocolError(`${payload.length - offset} bytes after the deflate blocks`)
    return out
  }
}

// ---- zstd-batch ----

interface ZstdBinding {
  Encoder: new (level: number) => { encodeSync (data: Buffer): Buffer }
  Decoder: new () => { decodeSync (data: Buffer): Buffer }
}

let binding: ZstdBinding | null | undefined
/** The native binding, or null when it does not load here (no prebuilt binary for this platform). */
function zstd (): ZstdBinding | null {
  if (binding === undefined) {
    try {
      binding = createRequire(import.meta.url)('@toondepauw/node-zstd') as ZstdBinding
    } catch {
      binding = null
    }
  }
  return binding
}

const ZSTD_MAGIC = 0xfd2fb528
const ZSTD_MAX_BLOCK = 128 * 1024

interface FrameInfo {
  /** Offset of the Frame_Header_Descriptor and the bytes of header after it. */
  fhd: number
  headerEnd: number
  contentSize: number | undefined
  windowSize: number
}

/** Parses a zstd frame header (RFC 8878 3.1.1.1) at `bytes[0]`. */
function frameHeader (bytes: Uint8Array): FrameInfo {
  if (bytes.length < 6) throw new ProtocolError('zstd frame truncated in its header')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (view.getUint32(0, true) !== ZSTD_MAGIC) throw new ProtocolError('not a zstd frame')
  const fhd = bytes[4]!
  if ((fhd & 0x08) !== 0) throw new ProtocolError('zstd frame header reserved bit set')
  if ((fhd & 0x03) !== 0) throw new ProtocolError('zstd frame with a dictionary')
  const singleSegment = (fhd & 0x20) !== 0
  const fcsFlag = fhd >> 6
  let offset = 5
  let windowSize = 0
  if (!singleSegment) {
    const wd = bytes[offset++]!
    const base = 2 ** (10 + (wd >> 3))
    windowSize = base + (base / 8) * (wd & 7)
  }
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!
  if (offset + fcsBytes > bytes.length) throw new ProtocolError('zstd frame truncated in its header')
  let contentSize: number | undefined
  if (fcsBytes === 1) contentSize = bytes[offset]!
  else if (fcsBytes === 2) contentSize = view.getUint16(offset, true) + 256
  else if (fcsBytes === 4) contentSize = view.getUint32(offset, true)
  else if (fcsBytes === 8) contentSize = Number(view.getBigUint64(offset, true))
  offset += fcsBytes
  if (singleSegment) windowSize = contentSize!
  return { fhd: 4, headerEnd: offset, contentSize, windowSize }
}

/**
 * Checks that `frame` is exactly one zstd frame that regenerates `total` bytes at most (its header
 * declares exactly `total`), by walking its block headers (RFC 8878 3.1.1.2) without decoding.
 */
function checkFrame (frame: Uint8Array, total: number): void {
  const info = frameHeader(frame)
  if (info.contentSize === undefined) throw new ProtocolError('zstd frame without a content size')
  if (info.contentSize !== total) throw new ProtocolError(`zstd frame declares ${info.contentSize} bytes, the payload ${total}`)
  if (info.windowSize > MAX_WINDOW) throw new ProtocolError(`zstd window of ${info.windowSize} bytes exceeds ${MAX_WINDOW}`)
  const checksum = (frame[info.fhd]! & 0x04) !== 0
  let offset = info.headerEnd
  let exact = 0
  let upTo = 0
  for (;;) {
    if (offset + 3 > frame.length) throw new ProtocolError('zstd frame truncated in a block header')
    const h = frame[offset]! | (frame[offset + 1]! << 8) | (frame[offset + 2]! << 16)
    offset += 3
    const last = (h & 1) !== 0
    const type = (h >> 1) & 3
    const size = h >>> 3
    if (type === 3) throw new ProtocolError('zstd block of reserved type')
    if (size > ZSTD_MAX_BLOCK) throw new ProtocolError(`zstd block of ${size} bytes`)
    if (type === 2) upTo += ZSTD_MAX_BLOCK
    else { exact += size; upTo += size }
    offset += type === 1 ? 1 : size
    if (offset > frame.length) throw new ProtocolError('zstd frame truncated in a block')
    if (last) break
  }
  if (checksum) offset += 4
  if (offset !== frame.length) throw new ProtocolError(offset > frame.length ? 'zstd frame truncated in its checksum' : `${frame.length - offset} bytes after the zstd frame`)
  if (exact > total || upTo < total) throw new ProtocolError(`zstd blocks cannot regenerate the ${total} bytes declared`)
}

/**
 * The encoder writes no Frame_Content_Size: put one in (4 bytes), so that decoders (ours included)
 * decode into a buffer of that size, bounded. Blocks do not depend on the header, so this is safe.
 */
function withContentSize (frame: Buffer, total: number): Uint8Array[] {
  const info = frameHeader(frame)
  if (info.contentSize !== undefined) {
    if (info.contentSize !== total) throw new Error(`zstd encoder declared ${info.contentSize} bytes for ${total}`)
    return [frame]
  }
  const header = new Uint8Array(info.headerEnd + 4)
  header.set(frame.subarray(0, info.headerEnd))
  header[info.fhd] = (frame[info.fhd]! & 0x3f) | (2 << 6)
  new DataView(header.buffer).setUint32(info.headerEnd, total, true)
  return [header, frame.subarray(info.headerEnd)]
}

let encoder: InstanceType<ZstdBinding['Encoder']> | undefined
let decoder: InstanceType<ZstdBinding['Decoder']> | undefined

const ZSTD_BATCH: Codec = {
  name: 'zstd-batch',
  encode (blocks) {
    const total = checkBlocks(blocks)
    const z = zstd()
    if (z == null) throw new Error('zstd-batch is not available here (@toondepauw/node-zstd did not load)')
    // All of it random or already compressed: not worth a try.
    if (total === 0 || blocks.every(looksIncompressible)) return encodeStored(blocks, total)
    const input = Buffer.allocUnsafe(total)
    let offset = 0
    for (const b of blocks) {
      input.set(b, offset)
      offset += b.length
    }
    encoder ??= new z.Encoder(ZSTD_LEVEL)
    const parts = withContentSize(encoder.encodeSync(input), total)
    const head = headerLength(blocks)
    const frameLength = parts.reduce((n, p) => n + p.length, 0)
    if (frameLength >= total) return encodeStored(blocks, total)
    const out = new Uint8Array(head + frameLength)
    offset = writeHeader(out, METHOD_ZSTD, blocks)
    for (const p of parts) {
      out.set(p, offset)
      offset += p.length
    }
    return out
  },
  decode (payload, maxOutputBytes) {
    const h = readHeader(payload, maxOutputBytes)
    if (h.method === METHOD_STORED) return decodeStored(payload, h)
    if (h.method !== METHOD_ZSTD) throw new ProtocolError(`codec method ${h.method} not negotiated (zstd-batch)`)
    const z = zstd()
    if (z == null) throw new ProtocolError('zstd-batch payload, but zstd is not available here')
    const frame = payload.subarray(h.offset)
    checkFrame(frame, h.total)
    decoder ??= new z.Decoder()
    let out: Buffer
    try {
      out = decoder.decodeSync(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength))
    } catch (err) {
      throw new ProtocolError(`bad zstd frame: ${(err as Error).message}`)
    }
    if (out.length !== h.total) throw new ProtocolError(`zstd frame decoded to ${out.length} bytes, declared ${h.total}`)
    return split(out, h.lengths)
  }
}

// ---- negotiation ----

const CODECS: ReadonlyMap<string, Codec> = new Map([ZSTD_BATCH, DEFLATE_1, NONE].map(c => [c.name, c]))

/** The codecs this process can use, best first (`zstd-batch` only where the native binding loads). */
export function localCodecs (): CodecName[] {
  return zstd() != null ? ['zstd-batch', 'deflate-1', 'none'] : ['deflate-1', 'none']
}

/** A codec by its negotiated name, if this process can use it. */
export function getCodec (name: string): Codec | undefined {
  const codec = CODECS.get(name)
  return codec != null && localCodecs().includes(codec.name) ? codec : undefined
}

/**
 * The first of `ours` (best first) that `theirs` lists and this process can use; `none` otherwise.
 * Both sides get the same codec when both send `localCodecs()` (one global order, filtered).
 */
export function negotiate (ours: readonly string[], theirs: readonly string[]): Codec {
  for (const name of ours) {
    if (theirs.includes(name)) {
      const codec = getCodec(name)
      if (codec != null) return codec
    }
  }
  return NONE
}

export { ZSTD_BATCH, DEFLATE_1, NONE }

/** Blocks the exchange reads (and so compresses) together: one batch of wants (server.ts). */
export const WIRE_BATCH_BLOCKS = 64

/**
 * One read batch split into BLOCKS frames: consecutive runs of at most MAX_BLOCK_SIZE bytes in all.
 * The server sends these, and batchWireBytes estimates them: one rule for both.
 */
export function frameGroups<T> (items: readonly T[], length: (item: T) => number): T[][] {
  const out: T[][] = []
  let group: T[] = []
  let bytes = 0
  for (const item of items) {
    if (group.length > 0 && bytes + length(item) > MAX_BLOCK_SIZE) {
      out.push(group)
      group = []
      bytes = 0
    }
    group.push(item)
    bytes += length(item)
  }
  if (group.length > 0) out.push(group)
  return out
}

/**
 * What `blocks`, in this order, cost on the wire when a server answers them in batches as the
 * exchange does with `zstd-batch`: WIRE_BATCH_BLOCKS at a time, at most MAX_BLOCK_SIZE bytes per
 * BLOCKS frame, a batch that looks incompressible as it is. Codec payloads only (no frame headers or
 * CIDs). Undefined when zstd is not available here.
 */
export function batchWireBytes (blocks: readonly Uint8Array[]): number | undefined {
  if (getCodec(ZSTD_BATCH.name) == null) return undefined
  let total = 0
  for (let i = 0; i < blocks.length; i += WIRE_BATCH_BLOCKS) {
    for (const group of frameGroups(blocks.slice(i, i + WIRE_BATCH_BLOCKS), b => b.length)) {
      total += group.every(looksIncompressible) ? group.reduce((n, b) => n + b.length, 0) : ZSTD_BATCH.encode(group).length
    }
  }
  return total
}
