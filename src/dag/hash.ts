import { blake3 as nativeBlake3, blake3UrlSafeBase64 } from '@napi-rs/blake-hash'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import * as raw from 'multiformats/codecs/raw'
import * as dagCbor from '@ipld/dag-cbor'
import { InvalidCidError } from '../errors.js'

/** Multicodec code of BLAKE3 with a 32-byte digest. */
export const BLAKE3_CODE = 0x1e
export const RAW_CODE = raw.code
export const DAG_CBOR_CODE = dagCbor.code

/**
 * A multiformats hasher that answers synchronously (the native hash of a 64 KiB block takes ~20 µs,
 * far less than an `await`), so the import's hot path never yields for hashing.
 */
export const blake3 = {
  name: 'blake3',
  code: BLAKE3_CODE,
  digest (input: Uint8Array): Digest.Digest<typeof BLAKE3_CODE, number> {
    return Digest.create(BLAKE3_CODE, nativeBlake3(input))
  }
}

/** The CIDv1 of a raw leaf. */
export function rawCid (bytes: Uint8Array): CID {
  return CID.createV1(RAW_CODE, blake3.digest(bytes))
}

/**
 * The raw leaf CID whose binary form is `bytes` (0x01 0x55 0x1e 0x20 and a 32-byte BLAKE3 digest, as
 * the import's chunk engine writes it), without copying or re-encoding: the CID's digest and bytes
 * are views of `bytes`.
 */
export function leafCidFromBytes (bytes: Uint8Array): CID {
  if (bytes[1] !== RAW_CODE || !isOurCid(bytes)) throw new InvalidCidError('not the bytes of a raw BLAKE3 CIDv1')
  return cidView(bytes)
}

/** 36 bytes: 0x01, raw or dag-cbor, BLAKE3 (0x1e), 32 — every varint one byte. */
function isOurCid (bytes: Uint8Array): boolean {
  const code = bytes[1]
  return bytes.length === 36 && bytes[0] === 1 && (code === RAW_CODE || code === DAG_CBOR_CODE) && bytes[2] === BLAKE3_CODE && bytes[3] === 32
}

/** The CID whose binary form is `bytes` (isOurCid), its digest and bytes views of them. */
function cidView (bytes: Uint8Array): CID {
  return new CID(1, bytes[1]!, new Digest.Digest(BLAKE3_CODE, 32, bytes.subarray(4), bytes.subarray(2)), bytes)
}

/**
 * `CID.decode`, without its copy: a BLAKE3 CIDv1 of a raw leaf or a dag-cbor node (the CIDs of every
 * block of ours; 36 bytes, all varints one byte) keeps views of `bytes` as its digest and bytes.
 * CID.decode re-encodes them into a fresh 36-byte array, and the first look at that small array's
 * `.buffer` costs V8 an allocation: ~3 µs per CID on paths that see every block. Any other CID goes
 * through CID.decode (and its errors).
 */
export function decodeCid (bytes: Uint8Array): CID {
  return isOurCid(bytes) ? cidView(bytes) : CID.decode(bytes)
}

/** The CIDv1 of a dag-cbor node's encoded bytes. */
export function cborCid (bytes: Uint8Array): CID {
  return CID.createV1(DAG_CBOR_CODE, blake3.digest(bytes))
}

/**
 * True when `bytes` hash to `cid` (the only hash we accept is BLAKE3).
 *
 * The digest comes back as a string (URL-safe base64, 43 characters and one `=`), compared with the
 * expected digest's: the addon's Buffer result is an external ArrayBuffer with a finalizer, ~0.8 µs
 * more per block than the string on both sides of every transfer, and work for every scavenge after.
 */
export function verifyBlock (cid: CID, bytes: Uint8Array): boolean {
  const { code, digest: expected } = cid.multihash
  if (code !== BLAKE3_CODE || expected.length !== 32) return false
  const digest = blake3UrlSafeBase64(bytes)
  return digest.length === 44 && digest.startsWith(Buffer.from(expected.buffer, expected.byteOffset, 32).toString('base64url'))
}

/** Parses a CID given by a user, with a typed error instead of multiformats' generic one. */
export function parseCid (text: string): CID {
  let cid: CID
  try {
    cid = CID.parse(text.trim())
  } catch {
    throw new InvalidCidError(`not a valid CID: ${JSON.stringify(text)}`)
  }
  if (cid.version !== 1 || cid.multihash.code !== BLAKE3_CODE) {
    throw new InvalidCidError(`${text} is not a BLAKE3 CIDv1 (collective-peer addresses every block with BLAKE3)`)
  }
  if (cid.code !== RAW_CODE && cid.code !== DAG_CBOR_CODE) {
    throw new InvalidCidError(`${text}: codec 0x${cid.code.toString(16)} is neither raw nor dag-cbor`)
  }
  return cid
}

export { CID }

/**
 * A compact string key for a block, for Sets and Maps: its digest's bytes as latin1. Cheaper than
 * `cid.toString()` (base32 plus a cache entry) on paths that see every block.
 */
export function blockId (cid: CID): string {
  return digestId(cid.multihash.digest)
}

/** `blockId` of the block whose BLAKE3 digest is `digest`. */
export function digestId (digest: Uint8Array): string {
  return Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('latin1')
}

