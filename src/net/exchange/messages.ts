import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { encodeFrame, frameHeader, ProtocolError, MAX_CONTROL_FRAME, type Frame } from './frames.js'
import { BLAKE3_CODE, decodeCid } from '../../dag/hash.js'
import { varintLength, writeVarint } from './codec.js'
import { decodeDagCbor, headLength, writeHead, cidLength, writeCid, readCanonicalHead, readCanonicalCid } from '../../dag/cbor.js'

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

/**
 * What may be sent: any message, and a WANT or CANCEL that names some CIDs by their binary form
 * (a pull's leaves: views of its skeleton, not CID objects). They encode the same.
 */
export type OutMessage =
  | Message
  | { type: typeof T.WANT, priority: Priority, cids: Array<CID | Uint8Array> }
  | { type: typeof T.CANCEL, cids: Array<CID | Uint8Array> }

export function encodeMessage (m: OutMessage): Uint8Array {
  switch (m.type) {
    case T.HELLO: return encodeFrame(m.type, dagCbor.encode(m.features != null ? { v: m.version, compress: m.compress, f: m.features } : { v: m.version, compress: m.compress }))
    case T.WANT: return encodeFrame(m.type, encodeCidList(m.cids, m.priority))
    case T.CANCEL:
    case T.DONT_HAVE:
    case T.ELSEWHERE: return encodeFrame(m.type, encodeCidList(m.cids))
    case T.INTEREST: return encodeFrame(m.type, dagCbor.encode({ r: m.root }))
    case T.HAVE: {
      const body: Record<string, unknown> = { r: m.root }
      if (m.all === true) body.all = true
      if (m.bitfield != null) { body.n = m.count; body.b = m.bitfield }
      if (m.indices != null) {
        if (m.all !== true && m.bitfield == null) return encodeFrame(m.type, encodeHaveIndices(m.root, m.indices))
        body.i = m.indices
      }
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
export function encodeMessageParts (m: OutMessage): Uint8Array[] {
  if (m.type !== T.BLOCK) return [encodeMessage(m)]
  const cid = m.cid.bytes
  const head = frameHeader(m.type, 2 + cid.length + m.data.length, 2 + cid.length)
  const at = head.length - 2 - cid.length
  head[at] = m.compressed ? 1 : 0
  head[at + 1] = cid.length
  head.set(cid, at + 2)
  return [head, m.data]
}

// ---- the hot control frames, in DAG-CBOR written and read directly ----
//
// WANTs (and CANCEL, DONT_HAVE, ELSEWHERE) and HAVE updates are most of the control traffic: a
// fan-out host sends a WANT per ~13 blocks and every peer an update every 500 ms. cborg's generic
// encoder and decoder (tokens, then objects, then CIDs) took ~4 % of a host's CPU in the N = 16
// fan-out. These write the exact bytes `dagCbor.encode` writes (canonical: keys by length then
// bytes, shortest integer forms), and read that canonical form only: anything else (another key
// order, a longer integer form, a CID that is not a 36-byte BLAKE3 CIDv1) goes through the generic
// decoder and its checks, so what is accepted, and how it is read, does not change.

/** Key "c", "i", "p", "r" as CBOR text strings of one byte. */
const KEY = { c: 0x63, i: 0x69, p: 0x70, r: 0x72 } as const

/** `dagCbor.encode({ c: cids })`, or with `p: priority`, byte for byte. */
export function encodeCidList (cids: ReadonlyArray<CID | Uint8Array>, priority?: number): Uint8Array {
  let length = 1 + 2 + headLength(cids.length) + (priority != null ? 2 + headLength(priority) : 0)
  for (const c of cids) length += cidLength(c)
  const out = new Uint8Array(length)
  out[0] = priority != null ? 0xa2 : 0xa1
  out[1] = 0x61
  out[2] = KEY.c
  let at = writeHead(out, 3, 4, cids.length)
  for (const c of cids) at = writeCid(out, at, c)
  if (priority != null) {
    out[at++] = 0x61
    out[at++] = KEY.p
    at = writeHead(out, at, 0, priority)
  }
  return out
}

/** `dagCbor.encode({ r: root, i: indices })` (a HAVE update), byte for byte. */
export function encodeHaveIndices (root: CID, indices: number[]): Uint8Array {
  let length = 1 + 2 + headLength(indices.length) + 2 + cidLength(root)
  for (const i of indices) length += headLength(i)
  const out = new Uint8Array(length)
  out[0] = 0xa2
  out[1] = 0x61
  out[2] = KEY.i
  let at = writeHead(out, 3, 4, indices.length)
  for (const i of indices) at = writeHead(out, at, 0, i)
  out[at++] = 0x61
  out[at++] = KEY.r
  writeCid(out, at, root)
  return out
}

/**
 * `{ c: cids }` (or with `p`, a priority 0..2, when `withPriority`) in the canonical form, with 1 to
 * MAX_LIST of our CIDs; undefined for anything else (the generic decoder then decides).
 */
function decodeCidList (b: Uint8Array, withPriority: boolean): { cids: CID[], priority: number } | undefined {
  if (b.length > MAX_CONTROL_FRAME || b[0] !== (withPriority ? 0xa2 : 0xa1) || b[1] !== 0x61 || b[2] !== KEY.c) return undefined
  const head = readCanonicalHead(b, 3, 4)
  if (head == null || head[0] < 1 || head[0] > MAX_LIST) return undefined
  let at = head[1]
  const cids = new Array<CID>(head[0])
  for (let k = 0; k < cids.length; k++) {
    const c = readCanonicalCid(b, at)
    if (c == null) return undefined
    cids[k] = c[0]
    at = c[1]
  }
  let priority = -1
  if (withPriority) {
    if (b[at] !== 0x61 || b[at + 1] !== KEY.p) return undefined
    priority = b[at + 2]!
    if (priority > 2) return undefined
    at += 3
  }
  return at === b.length ? { cids, priority } : undefined
}

/** `{ i: indices, r: root }` in the canonical form (at most MAX_LIST * 4 indices); undefined for anything else. */
function decodeHaveIndices (b: Uint8Array): { root: CID, indices: number[] } | undefined {
  if (b.length > MAX_CONTROL_FRAME || b[0] !== 0xa2 || b[1] !== 0x61 || b[2] !== KEY.i) return undefined
  const head = readCanonicalHead(b, 3, 4)
  if (head == null || head[0] > MAX_LIST * 4) return undefined
  let at = head[1]
  const indices = new Array<number>(head[0])
  for (let k = 0; k < indices.length; k++) {
    const v = readCanonicalHead(b, at, 0)
    if (v == null) return undefined
    indices[k] = v[0]
    at = v[1]
  }
  if (b[at] !== 0x61 || b[at + 1] !== KEY.r) return undefined
  const root = readCanonicalCid(b, at + 2)
  return root != null && root[1] === b.length ? { root: root[0], indices } : undefined
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
      const fast = decodeCidList(payload, true)
      if (fast != null) return { type, priority: fast.priority as Priority, cids: fast.cids }
      const v = cbor(payload)
      if (v.p !== 0 && v.p !== 1 && v.p !== 2) throw new ProtocolError('bad WANT priority')
      return { type, priority: v.p, cids: cidList(v.c) }
    }
    case T.CANCEL:
    case T.DONT_HAVE:
    case T.ELSEWHERE: return { type, cids: decodeCidList(payload, false)?.cids ?? cidList(cbor(payload).c) }
    case T.INTEREST: return { type, root: cid(cbor(payload).r) }
    case T.HAVE: {
      const fast = decodeHaveIndices(payload)
      if (fast != null) return { type, root: fast.root, indices: fast.indices }
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
