import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { encodeFrame, frameHeader, ProtocolError, MAX_CONTROL_FRAME, type Frame } from './frames.js'
import { BLAKE3_CODE, decodeCid } from '../../dag/hash.js'
import { varintLength, writeVarint } from './codec.js'
import { decodeDagCbor } from '../../dag/cbor.js'

export const PROTOCOL = '/collective/blocks/1.0.0'
export const PROTOCOL_VERSION = 1

/** Frame types (docs/protocol.md). */
export const T = {
  HELLO: 0x01,
  WANT: 0x02,
  CANCEL: 0x03,
  INTEREST: 0x04,
  BLOCK: 0x10,
  DONT_HAVE: 0x11,
  HAVE: 0x12,
  BLOCKS: 0x13,
  ELSEWHERE: 0x14
} as const

/**
 * Optional behaviours a side lists in HELLO (`f`); one is used only if both list it.
 * `elsewhere`: the server may answer a background WANT with ELSEWHERE (see docs/protocol.md).
 */
export const FEATURES = ['elsewhere'] as const

/** Want priorities: a VM's read waits on it, then boot-order prefetch, then background pulls. */
export const Priority = { Demand: 0, Prefetch: 1, Background: 2 } as const
export type Priority = typeof Priority[keyof typeof Priority]

/** CIDs per WANT, CANCEL or DONT_HAVE frame. */
export const MAX_LIST = 1024
/** Bitfield bytes per HAVE: 2^21 leaves, 32 GiB of 16 KiB chunks per frame (more in updates). */
export const MAX_BITFIELD = 256 * 1024 - 256

export type Message =
  | { type: typeof T.HELLO, version: number, compress: string[], features?: string[] }
  | { type: typeof T.WANT, priority: Priority, cids: CID[] }
  | { type: typeof T.CANCEL, cids: CID[] }
  | { type: typeof T.INTEREST, root: CID }
  /** `wire`: bytes it took on the wire, when it came in a BLOCKS batch (set by the receiver, never encoded). */
  | { type: typeof T.BLOCK, cid: CID, compressed: boolean, data: Uint8Array, wire?: number }
  /** Several blocks in one codec payload (src/net/exchange/codec.ts), in the order of `cids`. */
  | { type: typeof T.BLOCKS, cids: CID[], payload: Uint8Array }
  | { type: typeof T.DONT_HAVE, cids: CID[] }
  /** The server sent these blocks lately to another peer following their root: ask that one (or this server again, later). */
  | { type: typeof T.ELSEWHERE, cids: CID[] }
  /** Leaves a peer holds of `root`: `all`, or a bitfield over `count` leaves, or new `indices`. */
  | { type: typeof T.HAVE, root: CID, all?: boolean, count?: number, bitfield?: Uint8Array, indices?: number[] }

export function encodeMessage (m: Message): Uint8Array {
  switch (m.type) {
    case T.HELLO: return encodeFrame(m.type, dagCbor.encode(m.features != null ? { v: m.version, compress: m.compress, f: m.features } : { v: m.version, compress: m.compress }))
    case T.WANT: return encodeFrame(m.type, dagCbor.encode({ p: m.priority, c: m.cids }))
    case T.CANCEL:
    case T.DONT_HAVE:
    case T.ELSEWHERE: return encodeFrame(m.type, dagCbor.encode({ c: m.cids }))
    case T.INTEREST: return encodeFrame(m.type, dagCbor.encode({ r: m.root }))
    case T.HAVE: {
      const body: Record<string, unknown> = { r: m.root }
      if (m.all === true) body.all = true
      if (m.bitfield != null) { body.n = m.count; body.b = m.bitfield }
      if (m.indices != null) body.i = m.indices
      return encodeFrame(m.type, dagCbor.encode(body))
    }
    case T.BLOCKS: {
      let length = varintLength(m.cids.length) + m.payload.length
      for (const c of m.cids) length += 1 + c.bytes.length
      const body = new Uint8Array(length)
      let at = writeVarint(body, 0, m.cids.length)
      for (const c of m.cids) {
        body[at++] = c.bytes.length
        body.set(c.bytes, at)
        at += c.bytes.length
      }
      body.set(m.payload, at)
      return encodeFrame(m.type, body)
    }
    case T.BLOCK: {
      const cid = m.cid.bytes
      const payload = new Uint8Array(2 + cid.length + m.data.length)
      payload[0] = m.compressed ? 1 : 0
      payload[1] = cid.length
      payload.set(cid, 2)
      payload.set(m.data, 2 + cid.length)
      return encodeFrame(m.type, payload)
    }
  }
}

/**
 * A message as the parts to write back to back: a BLOCK's data is not copied into a frame (the
 * channel copies every part once, into the write that carries it).
 */
export function encodeMessageParts (m: Message): Uint8Array[] {
  if (m.type !== T.BLOCK) return [encodeMessage(m)]
  const cid = m.cid.bytes
  const head = frameHeader(m.type, 2 + cid.length + m.data.length, 2 + cid.length)
  const at = head.length - 2 - cid.length
  head[at] = m.compressed ? 1 : 0
  head[at + 1] = cid.length
  head.set(cid, at + 2)
  return [head, m.data]
}

function cid (value: unknown): CID {
  const c = CID.asCID(value)
  if (c == null || c.version !== 1 || c.multihash.code !== BLAKE3_CODE) throw new ProtocolError('expected a BLAKE3 CIDv1')
  return c
}

function cidList (value: unknown): CID[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_LIST) throw new ProtocolError(`expected 1..${MAX_LIST} CIDs`)
  return value.map(cid)
}

function cbor (payload: Uint8Array): any {
  if (payload.length > MAX_CONTROL_FRAME) throw new ProtocolError(`control frame of ${payload.length} bytes`)
  try {
    const value = decodeDagCbor(payload) as any
    if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a map')
    return value
  } catch (err) {
    throw new ProtocolError(`malformed frame: ${(err as Error).message}`)
  }
}

/** Decodes and validates one frame from an untrusted peer. */
export function decodeMessage (frame: Frame): Message {
  const { type, payload } = frame
  switch (type) {
    case T.HELLO: {
      const v = cbor(payload)
      const names = (list: unknown): boolean => Array.isArray(list) && list.length <= 8 && list.every((c: unknown) => typeof c === 'string' && c.length < 32)
      if (!Number.isInteger(v.v) || !names(v.compress) || (v.f != null && !names(v.f))) throw new ProtocolError('malformed HELLO')
      return { type, version: v.v, compress: v.compress, features: v.f ?? [] }
    }
    case T.WANT: {
      const v = cbor(payload)
      if (v.p !== 0 && v.p !== 1 && v.p !== 2) throw new ProtocolError('bad WANT priority')
      return { type, priority: v.p, cids: cidList(v.c) }
    }
    case T.CANCEL:
    case T.DONT_HAVE:
    case T.ELSEWHERE: return { type, cids: cidList(cbor(payload).c) }
    case T.INTEREST: return { type, root: cid(cbor(payload).r) }
    case T.HAVE: {
      const v = cbor(payload)
      const m: Message = { type, root: cid(v.r) }
      if (v.all === true) m.all = true
      if (v.b != null) {
        if (!(v.b instanceof Uint8Array) || v.b.length > MAX_BITFIELD || !Number.isSafeInteger(v.n) || v.n < 0 || Math.ceil(v.n / 8) !== v.b.length) {
          throw new ProtocolError('malformed HAVE bitfield')
        }
        m.count = v.n
        m.bitfield = v.b
      }
      if (v.i != null) {
        if (!Array.isArray(v.i) || v.i.length > MAX_LIST * 4 || !v.i.every((i: unknown) => Number.isSafeInteger(i) && (i as number) >= 0)) {
          throw new ProtocolError('malformed HAVE indices')
        }
        m.indices = v.i
      }
      return m
    }
    case T.BLOCK: {
      if (payload.length < 2) throw new ProtocolError('short BLOCK')
      const flags = payload[0]!
      const cidLength = payload[1]!
      if ((flags & ~1) !== 0 || payload.length < 2 + cidLength) throw new ProtocolError('malformed BLOCK')
      let c: CID
      try {
        c = cid(decodeCid(payload.subarray(2, 2 + cidLength)))
      } catch (err) {
        throw err instanceof ProtocolError ? err : new ProtocolError('malformed BLOCK CID')
      }
      return { type, cid: c, compressed: (flags & 1) === 1, data: payload.subarray(2 + cidLength) }
    }
    case T.BLOCKS: {
      let at = 0
      let count = 0
      for (let shift = 0; ; shift += 7) {
        if (at >= payload.length || shift > 14) throw new ProtocolError('malformed BLOCKS count')
        const byte = payload[at++]!
        count |= (byte & 0x7f) << shift
        if ((byte & 0x80) === 0) break
      }
      if (count < 1 || count > MAX_LIST) throw new ProtocolError(`BLOCKS of ${count} blocks (1..${MAX_LIST})`)
      const cids: CID[] = []
      for (let i = 0; i < count; i++) {
        const length = payload[at]
        if (length == null || at + 1 + length > payload.length) throw new ProtocolError('malformed BLOCKS CID')
        try {
          cids.push(cid(decodeCid(payload.subarray(at + 1, at + 1 + length))))
        } catch (err) {
          throw err instanceof ProtocolError ? err : new ProtocolError('malformed BLOCKS CID')
        }
        at += 1 + length
      }
      return { type, cids, payload: payload.subarray(at) }
    }
    default:
      throw new ProtocolError(`unknown frame type 0x${type.toString(16)}`)
  }
}
