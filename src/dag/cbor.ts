import * as cborg from 'cborg'
import * as dagCbor from '@ipld/dag-cbor'
import { BLAKE3_CODE, DAG_CBOR_CODE, RAW_CODE, decodeCid } from './hash.js'
import type { CID } from 'multiformats/cid'

/** CBOR tag of a CID in dag-cbor. */
const CID_TAG = 42

const tags: cborg.TagDecoder[] = []
tags[CID_TAG] = (decode): CID => {
  const bytes = decode() as Uint8Array
  if (!(bytes instanceof Uint8Array) || bytes[0] !== 0) throw new Error('Invalid CID for CBOR tag 42; expected leading 0x00')
  return decodeCid(bytes.subarray(1))
}
const options: cborg.DecodeOptions = { ...dagCbor.decodeOptions, tags }

/**
 * `dagCbor.decode` with the same strict options, whose CIDs are read by `decodeCid`: half the time
 * on a disk node (113 links) or a WANT list, which the pull and the server decode for every 113
 * blocks and every WANT.
 */
export function decodeDagCbor (bytes: Uint8Array): unknown {
  return cborg.decode(bytes, options)
}

// ---- canonical DAG-CBOR by hand, for the hot paths ----
//
// Hot structures (a disk node's links, WANT lists, HAVE updates) are written and read directly
// here: the exact bytes `dagCbor.encode` writes, and readers that accept that canonical form only.
// A reader answers undefined at the first byte it does not expect, and the caller then decodes with
// `decodeDagCbor` and its checks, so nothing is accepted or read differently.

/** Bytes of a CBOR head (major type, argument) in its shortest form. */
export function headLength (value: number): number {
  return value < 24 ? 1 : value < 0x100 ? 2 : value < 0x10000 ? 3 : value < 0x100000000 ? 5 : 9
}

/** Writes a CBOR head in its shortest form; returns the offset after it. */
export function writeHead (out: Uint8Array, at: number, major: number, value: number): number {
  const m = major << 5
  if (value < 24) { out[at] = m | value; return at + 1 }
  if (value < 0x100) { out[at] = m | 24; out[at + 1] = value; return at + 2 }
  if (value < 0x10000) { out[at] = m | 25; out[at + 1] = value >>> 8; out[at + 2] = value & 0xff; return at + 3 }
  if (value < 0x100000000) {
    out[at] = m | 26
    new DataView(out.buffer, out.byteOffset + at + 1, 4).setUint32(0, value)
    return at + 5
  }
  out[at] = m | 27
  new DataView(out.buffer, out.byteOffset + at + 1, 8).setBigUint64(0, BigInt(value))
  return at + 9
}

/** Bytes of a CID in DAG-CBOR: tag 42, a byte string of 0x00 and the CID's bytes (`c` a CID, or its binary form). */
export function cidLength (c: CID | Uint8Array): number {
  const length = c instanceof Uint8Array ? c.length : c.bytes.length
  return 2 + headLength(length + 1) + 1 + length
}

export function writeCid (out: Uint8Array, at: number, c: CID | Uint8Array): number {
  const bytes = c instanceof Uint8Array ? c : c.bytes
  out[at++] = 0xd8
  out[at++] = CID_TAG
  at = writeHead(out, at, 2, bytes.length + 1)
  out[at++] = 0
  out.set(bytes, at)
  return at + bytes.length
}

/** A CBOR head of `major` in its shortest form at `at` (value below 2^32): [value, next offset]. */
export function readCanonicalHead (b: Uint8Array, at: number, major: number): [number, number] | undefined {
  const first = b[at]
  if (first == null || first >> 5 !== major) return undefined
  const info = first & 0x1f
  if (info < 24) return [info, at + 1]
  if (info === 24 && at + 1 < b.length && b[at + 1]! >= 24) return [b[at + 1]!, at + 2]
  if (info === 25 && at + 2 < b.length) {
    const v = (b[at + 1]! << 8) | b[at + 2]!
    return v >= 0x100 ? [v, at + 3] : undefined
  }
  if (info === 26 && at + 4 < b.length) {
    const v = ((b[at + 1]! << 24) >>> 0) + ((b[at + 2]! << 16) | (b[at + 3]! << 8) | b[at + 4]!)
    return v >= 0x10000 ? [v, at + 5] : undefined
  }
  return undefined
}

/**
 * Where the 36 bytes of one of our CIDs (BLAKE3 CIDv1, raw or dag-cbor) start, as `writeCid` writes
 * it at `at` (the CID ends 36 bytes later); -1 if it is not one.
 */
function canonicalCidAt (b: Uint8Array, at: number): number {
  if (b[at] !== 0xd8 || b[at + 1] !== CID_TAG || b[at + 2] !== 0x58 || b[at + 3] !== 37 || b[at + 4] !== 0 || at + 41 > b.length) return -1
  const c = at + 5
  if (b[c] !== 1 || b[c + 2] !== BLAKE3_CODE || b[c + 3] !== 32 || (b[c + 1] !== RAW_CODE && b[c + 1] !== DAG_CBOR_CODE)) return -1
  return c
}

/** One of our CIDs (36-byte BLAKE3 CIDv1, raw or dag-cbor) as `writeCid` writes it: [CID, next offset]. */
export function readCanonicalCid (b: Uint8Array, at: number): [CID, number] | undefined {
  const c = canonicalCidAt(b, at)
  return c < 0 ? undefined : [decodeCid(b.subarray(c, c + 36)), c + 36]
}

/** "links" as a CBOR text string. */
const LINKS_KEY = [0x65, 0x6c, 0x69, 0x6e, 0x6b, 0x73]

/**
 * An interior disk node `{links: [[CID | null, length], ...]}` in the canonical form, read as
 * `decodeDagCbor` would read it; undefined for anything else. A 1 GiB image has ~500 of them and
 * 58 000 links: cborg's generic decoder took ~100 ms of a pull's start in a fresh process.
 */
export function readCanonicalNode (b: Uint8Array): { links: Array<[CID | null, number]> } | undefined {
  const found = readCanonicalLinks(b)
  if (found == null) return undefined
  const { cidAt, lengths } = found
  const links = new Array<[CID | null, number]>(lengths.length)
  for (let k = 0; k < links.length; k++) links[k] = [cidAt[k]! < 0 ? null : decodeCid(b.subarray(cidAt[k], cidAt[k]! + 36)), lengths[k]!]
  return { links }
}

/**
 * The links of a canonical interior node without CID objects: where each link's 36 CID bytes start
 * in `b` (-1 for a hole; each is one of our CIDs, raw or dag-cbor) and its length. A pull lists a
 * skeleton's leaves from these (a CID object per leaf was half of a 1 GiB skeleton's decoding).
 */
export function readCanonicalLinks (b: Uint8Array): { cidAt: Int32Array, lengths: number[] } | undefined {
  if (b[0] !== 0xa1) return undefined
  for (let k = 0; k < LINKS_KEY.length; k++) if (b[1 + k] !== LINKS_KEY[k]) return undefined
  const head = readCanonicalHead(b, 7, 4)
  if (head == null) return undefined
  let at = head[1]
  // A link takes 3 bytes at least: a count the node cannot hold is not allocated for.
  if (head[0] * 3 > b.length - at) return undefined
  const cidAt = new Int32Array(head[0])
  const lengths = new Array<number>(head[0])
  for (let k = 0; k < lengths.length; k++) {
    if (b[at] !== 0x82) return undefined
    if (b[at + 1] === 0xf6) {
      cidAt[k] = -1
      at += 2
    } else {
      const c = canonicalCidAt(b, at + 1)
      if (c < 0) return undefined
      cidAt[k] = c
      at = c + 36
    }
    const length = readCanonicalHead(b, at, 0)
    if (length == null) return undefined
    lengths[k] = length[0]
    at = length[1]
  }
  return at === b.length ? { cidAt, lengths } : undefined
}
