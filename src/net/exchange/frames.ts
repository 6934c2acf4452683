import { CollectiveError } from '../../errors.js'
import { MAX_BLOCK_SIZE } from '../../dag/node.js'

/**
 * The largest frame either side accepts: a block, or a BLOCKS batch (at most MAX_BLOCK_SIZE of
 * blocks, stored in the worst case), plus headers and CIDs.
 */
export const MAX_FRAME = MAX_BLOCK_SIZE + 64 * 1024
/** Frames other than BLOCK carry lists and bitfields; they stay far smaller. */
export const MAX_CONTROL_FRAME = 256 * 1024

export class ProtocolError extends CollectiveError {
  static readonly code = 'ERR_PROTOCOL'
  override readonly name = 'ProtocolError'
  constructor (message: string) { super(message, ProtocolError.code) }
}

/** Encodes `type | payload` behind an unsigned LEB128 length (type byte included). */
export function encodeFrame (type: number, payload: Uint8Array): Uint8Array {
  const length = payload.length + 1
  if (length > MAX_FRAME) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_FRAME}`)
  const header: number[] = []
  let n = length
  while (n >= 0x80) {
    header.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  header.push(n)
  const out = new Uint8Array(header.length + length)
  out.set(header, 0)
  out[header.length] = type
  out.set(payload, header.length + 1)
  return out
}

/**
 * The start of a frame whose payload is `payloadLength` bytes: its length, its type, and room for the
 * first `extra` payload bytes (the caller fills them; the rest of the payload follows separately).
 */
export function frameHeader (type: number, payloadLength: number, extra = 0): Uint8Array {
  const length = payloadLength + 1
  if (length > MAX_FRAME) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_FRAME}`)
  let varint = 1
  for (let n = length; n >= 0x80; n >>>= 7) varint++
  const out = new Uint8Array(varint + 1 + extra)
  let n = length
  let i = 0
  while (n >= 0x80) {
    out[i++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[i++] = n
  out[i] = type
  return out
}

/** Frames that span two stream chunks are copied into buffers of this size (FrameDecoder.copyArea). */
const SLAB = 256 * 1024

export interface Frame {
  type: number
  payload: Uint8Array
}

/**
 * Reassembles frames from stream chunks. A length over `MAX_FRAME` (or a varint longer than 3
 * bytes) is a protocol error at once: nothing is buffered past one frame's bound.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = []
  private buffered = 0
  /** Where frames that span two chunks are copied (see copyArea). */
  private slab?: Buffer
  private slabAt = 0

  push (chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.buffered += chunk.length
    }
    const frames: Frame[] = []
    for (;;) {
      const header = this.peekLength()
      if (header == null) break
      const [length, headerBytes] = header
      if (this.buffered < headerBytes + length) break
      const bytes = this.take(headerBytes + length)
      frames.push({ type: bytes[headerBytes]!, payload: bytes.subarray(headerBytes + 1) })
    }
    return frames
  }

  /** Bytes held for an incomplete frame. */
  get pending (): number { return this.buffered }

  private peekLength (): [number, number] | undefined {
    let value = 0
    let shift = 0
    let index = 0
    for (const chunk of this.chunks) {
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i]!
        value |= (byte & 0x7f) << shift
        index++
        if ((byte & 0x80) === 0) {
          if (value === 0) throw new ProtocolError('empty frame')
          if (value > MAX_FRAME) throw new ProtocolError(`frame length ${value} exceeds ${MAX_FRAME}`)
          return [value, index]
        }
        shift += 7
        if (index >= 3) throw new ProtocolError('frame length varint too long')
      }
    }
    return undefined
  }

  private take (n: number): Uint8Array {
    const first = this.chunks[0]!
    let out: Uint8Array
    if (first.length >= n) {
      out = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
    } else {
      out = this.copyArea(n)
      let done = 0
      while (done < n) {
        const c = this.chunks[0]!
        const k = Math.min(c.length, n - done)
        out.set(c.subarray(0, k), done)
        done += k
        if (k === c.length) this.chunks.shift()
        else this.chunks[0] = c.subarray(k)
      }
    }
    this.buffered -= n
    return out
  }

  /**
   * Room for a frame that spans chunks: a third of a pull's blocks. Carved from a SLAB-byte buffer
   * rather than allocated each (an ArrayBuffer per block, ~5 µs, and work for every scavenge); a
   * slab is freed once no frame cut from it is referenced. Not zeroed: every byte is copied in.
   */
  private copyArea (n: number): Uint8Array {
    if (n > SLAB / 4) return Buffer.allocUnsafeSlow(n)
    if (this.slab == null || this.slabAt + n > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(SLAB)
      this.slabAt = 0
    }
    const out = this.slab.subarray(this.slabAt, this.slabAt + n)
    this.slabAt += (n + 7) & ~7
    return out
  }
}
