import * as cborg from 'cborg'
import * as dagCbor from '@ipld/dag-cbor'
import { decodeCid } from './hash.js'
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
