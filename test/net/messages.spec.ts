/**
 * Control frames (src/net/exchange/messages.ts). WANT, CANCEL, DONT_HAVE, ELSEWHERE and HAVE updates
 * are written and read by hand-written DAG-CBOR paths: they must write exactly what
 * `dagCbor.encode` writes, and read every payload exactly as the generic DAG-CBOR decoder does:
 * the same message, or a ProtocolError.
 */
import { describe, it, expect } from 'vitest'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { decodeMessage, encodeCidList, encodeHaveIndices, encodeMessage, T, type Message } from '../../src/net/exchange/messages.js'
import { encodeFrame, FrameDecoder, ProtocolError } from '../../src/net/exchange/frames.js'
import { cborCid, rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'

const leaves = (n: number, seed = 'm'): CID[] => Array.from({ length: n }, (_, i) => rawCid(pseudoRandom(`${seed}-${i}`, 64)))
const root = cborCid(pseudoRandom('root', 100))

/** The one frame `encodeMessage` writes, decoded. */
function roundTrip (m: Message): Message {
  const frames = new FrameDecoder().push(encodeMessage(m))
  expect(frames).toHaveLength(1)
  return decodeMessage(frames[0]!)
}

/** What the generic decoder makes of a payload: the message, or the ProtocolError (null: not a message of this type). */
function reference (type: number, payload: Uint8Array): Message | ProtocolError | null {
  let v: any
  try {
    v = dagCbor.decode(payload)
  } catch {
    return new ProtocolError('malformed')
  }
  if (v == null || typeof v !== 'object' || Array.isArray(v)) return new ProtocolError('not a map')
  const ours = (c: unknown): c is CID => CID.asCID(c) != null && (c as CID).version === 1 && (c as CID).multihash.code === 0x1e
  if (type === T.WANT || type === T.CANCEL) {
    if (!Array.isArray(v.c) || v.c.length === 0 || v.c.length > 1024 || !v.c.every(ours)) return new ProtocolError('bad list')
    if (type === T.CANCEL) return { type, cids: v.c }
    if (v.p !== 0 && v.p !== 1 && v.p !== 2) return new ProtocolError('bad priority')
    return { type, priority: v.p, cids: v.c }
  }
  return null
}

function same (a: Message | ProtocolError, b: Message | ProtocolError | null): void {
  if (b instanceof ProtocolError) {
    expect(a).toBeInstanceOf(ProtocolError)
    return
  }
  expect(a).not.toBeInstanceOf(ProtocolError)
  const strings = (m: any): any => JSON.parse(JSON.stringify(m, (_k, x) => (CID.asCID(x) != null ? x.toString() : x)))
  expect(strings(a)).toEqual(strings(b))
}

function decodeOrError (type: number, payload: Uint8Array): Message | ProtocolError {
  try {
    return decodeMessage({ type, payload })
  } catch (err) {
    if (err instanceof ProtocolError) return err
    throw err
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

describe('control frames', () => {
  it('CID lists and HAVE updates are byte for byte what dagCbor.encode writes', () => {
    const otherCid = CID.createV1(0x55, sha256.digest(new Uint8Array(3)) as any) // SHA-256: not ours, still encodable
    for (const n of [1, 2, 23, 24, 255, 256, 1024]) {
      const cids = leaves(n)
      expect(hex(encodeCidList(cids))).toBe(hex(dagCbor.encode({ c: cids })))
      for (const p of [0, 1, 2]) expect(hex(encodeCidList(cids, p))).toBe(hex(dagCbor.encode({ p, c: cids })))
    }
    expect(hex(encodeCidList([otherCid, ...leaves(3)], 1))).toBe(hex(dagCbor.encode({ p: 1, c: [otherCid, ...leaves(3)] })))
    // A pull names its leaves by their binary form (views of its skeleton), mixed with CID objects.
    const mixed = leaves(40)
    const named = mixed.map((c, i) => i % 3 === 0 ? c : c.bytes)
    expect(hex(encodeCidList(named, 2))).toBe(hex(dagCbor.encode({ p: 2, c: mixed })))
    expect(hex(encodeMessage({ type: T.WANT, priority: 2, cids: named }))).toBe(hex(encodeMessage({ type: T.WANT, priority: 2, cids: mixed })))
    expect(hex(encodeMessage({ type: T.CANCEL, cids: named }))).toBe(hex(encodeMessage({ type: T.CANCEL, cids: mixed })))
    const indices = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7]
    expect(hex(encodeHaveIndices(root, indices))).toBe(hex(dagCbor.encode({ r: root, i: indices })))
    expect(hex(encodeHaveIndices(root, []))).toBe(hex(dagCbor.encode({ r: root, i: [] })))
    expect(hex(encodeHaveIndices(otherCid, [5]))).toBe(hex(dagCbor.encode({ r: otherCid, i: [5] })))
  })

  it('round-trips every list message, and HAVE in all its forms', () => {
    const cids = leaves(300)
    for (const priority of [0, 1, 2] as const) same(roundTrip({ type: T.WANT, priority, cids }), { type: T.WANT, priority, cids })
    for (const type of [T.CANCEL, T.DONT_HAVE, T.ELSEWHERE] as const) same(roundTrip({ type, cids }), { type, cids })
    const indices = [0, 7, 24, 300, 70000, 2 ** 32 + 1]
    same(roundTrip({ type: T.HAVE, root, indices }), { type: T.HAVE, root, indices })
    same(roundTrip({ type: T.HAVE, root, all: true }), { type: T.HAVE, root, all: true })
    same(roundTrip({ type: T.HAVE, root, count: 12, bitfield: new Uint8Array([0xff, 0x0f]) }), { type: T.HAVE, root, count: 12, bitfield: new Uint8Array([0xff, 0x0f]) })
    same(roundTrip({ type: T.HAVE, root, count: 12, bitfield: new Uint8Array([0xff, 0x0f]), indices: [3] }), { type: T.HAVE, root, count: 12, bitfield: new Uint8Array([0xff, 0x0f]), indices: [3] })
  })

  it('reads the canonical form only; other encodings of the same value go through the generic decoder', () => {
    const cids = leaves(5)
    // The array's length as a 1-byte argument (0x98 0x05): not canonical, which strict DAG-CBOR refuses.
    const canonical = dagCbor.encode({ p: 1, c: cids })
    const longForm = new Uint8Array([...canonical.subarray(0, 3), 0x98, 0x05, ...canonical.subarray(4)])
    same(decodeOrError(T.WANT, longForm), reference(T.WANT, longForm))
    // A CID that is not ours (SHA-256) in a WANT: refused, as before.
    const sha = CID.createV1(0x55, sha256.digest(new Uint8Array(3)) as any)
    const foreign = dagCbor.encode({ p: 1, c: [sha] })
    expect(decodeOrError(T.WANT, foreign)).toBeInstanceOf(ProtocolError)
    // An empty list, a priority of 3, a missing priority, an extra key.
    expect(decodeOrError(T.WANT, dagCbor.encode({ p: 1, c: [] }))).toBeInstanceOf(ProtocolError)
    expect(decodeOrError(T.WANT, dagCbor.encode({ p: 3, c: cids }))).toBeInstanceOf(ProtocolError)
    expect(decodeOrError(T.WANT, dagCbor.encode({ c: cids }))).toBeInstanceOf(ProtocolError)
    same(decodeOrError(T.WANT, dagCbor.encode({ p: 2, c: cids, x: 1 })), { type: T.WANT, priority: 2, cids })
    expect(decodeOrError(T.CANCEL, dagCbor.encode({ c: leaves(1025) }))).toBeInstanceOf(ProtocolError)
  })

  it('every truncation and every single-byte change of a WANT decodes as the generic decoder says', () => {
    const payload = encodeCidList(leaves(12), 2)
    for (let cut = 0; cut < payload.length; cut++) {
      const p = payload.subarray(0, cut)
      same(decodeOrError(T.WANT, p), reference(T.WANT, p))
    }
    for (let at = 0; at < payload.length; at++) {
      for (const x of [0x00, 0x01, 0x18, 0x42, 0x99, 0xff, payload[at]! ^ 0x80]) {
        const p = payload.slice()
        p[at] = x
        same(decodeOrError(T.WANT, p), reference(T.WANT, p))
        same(decodeOrError(T.CANCEL, p), reference(T.CANCEL, p))
      }
    }
  })

  it('every truncation of a HAVE update is a ProtocolError; a changed index is read as the generic decoder reads it', () => {
    const indices = [1, 30, 300, 70000]
    const payload = encodeHaveIndices(root, indices)
    for (let cut = 0; cut < payload.length; cut++) expect(decodeOrError(T.HAVE, payload.subarray(0, cut))).toBeInstanceOf(ProtocolError)
    for (let at = 0; at < payload.length; at++) {
      const p = payload.slice()
      p[at] = p[at]! ^ 0x01
      const got = decodeOrError(T.HAVE, p)
      let v: any
      try { v = dagCbor.decode(p) } catch { v = undefined }
      if (got instanceof ProtocolError) continue
      // Accepted: it is what DAG-CBOR reads there.
      expect(v).toBeDefined()
      expect((got as any).indices).toEqual(v.i)
      expect((got as any).root.toString()).toBe(v.r.toString())
    }
  })
})

describe('FrameDecoder', () => {
  it('reassembles frames from any chunking; payloads stay intact after later frames (spanning ones share copy buffers)', () => {
    // Sizes around the copy buffers' bounds (a quarter of 256 KiB is the largest carved from one).
    const sizes = [1, 7, 8, 9, 4095, 16384, 18000, 65535, 65536, 65537, 200_000, ...Array.from({ length: 200 }, (_, i) => 1 + ((i * 7919) % 40_000))]
    const payloads = sizes.map((n, i) => pseudoRandom(`frame-${i}`, n))
    const wire = Buffer.concat(payloads.map(p => encodeFrame(0x10, p)))
    for (const seed of [1, 2, 3]) {
      const decoder = new FrameDecoder()
      const got: Uint8Array[] = []
      // Chunks of 1 byte to 100 KiB, as a socket hands them over.
      let x = seed
      for (let at = 0; at < wire.length;) {
        x = (x * 1103515245 + 12345) % 2147483648
        const n = Math.min(wire.length - at, 1 + (x % (x % 3 === 0 ? 100_000 : 30_000)))
        for (const f of decoder.push(wire.subarray(at, at + n))) {
          expect(f.type).toBe(0x10)
          got.push(f.payload)
        }
        at += n
      }
      expect(decoder.pending).toBe(0)
      expect(got).toHaveLength(payloads.length)
      for (const [i, p] of payloads.entries()) expect(Buffer.compare(got[i]!, p), `frame ${i} (${p.length} bytes), chunking ${seed}`).toBe(0)
    }
  })
})
