import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { BLAKE3_CODE } from '../dag/hash.js'
import type { Location } from './packs.js'

/**
 * LevelDB key spaces, one prefix byte each:
 *   b | blake3 digest (32)  -> block location (pack, offset, length, codec)
 *   p | pin name (utf8)      -> pin record (JSON)
 *   m | meta key (utf8)      -> metadata (JSON)
 * Blocks are keyed by digest, not CID: the same bytes are stored once whatever codec names them.
 */
export const BLOCK = 0x62
export const PIN = 0x70
export const META = 0x6d

export function blockKey (cid: CID): Uint8Array {
  return digestKey(cid.multihash.digest)
}

export function digestKey (digest: Uint8Array): Uint8Array {
  const key = new Uint8Array(1 + digest.length)
  key[0] = BLOCK
  key.set(digest, 1)
  return key
}

export function textKey (prefix: number, name: string): Uint8Array {
  const bytes = Buffer.from(name, 'utf8')
  const key = new Uint8Array(1 + bytes.length)
  key[0] = prefix
  key.set(bytes, 1)
  return key
}

/** Bounds for iterating one key space. */
export function range (prefix: number): { gte: Uint8Array, lt: Uint8Array } {
  return { gte: Uint8Array.of(prefix), lt: Uint8Array.of(prefix + 1) }
}

export interface IndexEntry extends Location {
  codec: number
}

/** An index value's size: pack (u32), length (u32), offset (f64), codec (u8), big-endian. */
export const LOCATION_BYTES = 17

export function encodeLocation (entry: IndexEntry): Uint8Array {
  const value = Buffer.allocUnsafe(LOCATION_BYTES)
  writeLocation(value, entry)
  return value
}

/** Writes `entry` as an index value into `out` (LOCATION_BYTES long). */
export function writeLocation (out: Buffer, entry: IndexEntry): void {
  out.writeUInt32BE(entry.pack, 0)
  out.writeUInt32BE(entry.length, 4)
  out.writeDoubleBE(entry.offset, 8)
  out[16] = entry.codec
}

export function decodeLocation (value: Uint8Array): IndexEntry {
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength)
  return { pack: view.getUint32(0), length: view.getUint32(4), offset: view.getFloat64(8), codec: value[16]! }
}

/** Rebuilds the CID of an index key and its codec. */
export function keyToCid (key: Uint8Array, codec: number): CID {
  return CID.createV1(codec, Digest.create(BLAKE3_CODE, key.subarray(1)))
}
