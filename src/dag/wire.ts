import { deflateRawSync, inflateRawSync } from 'node:zlib'

/**
 * Block compression on the wire: raw DEFLATE at level 1 (fast; disk data is mostly code and text,
 * and zero padding inside chunks). A block is sent compressed only when that makes it smaller.
 */
export const WIRE_COMPRESSION = 'deflate-raw'
const LEVEL = 1

export function compressBlock (bytes: Uint8Array): Uint8Array | undefined {
  const out = deflateRawSync(bytes, { level: LEVEL })
  return out.length < bytes.length ? out : undefined
}

/** Inflates with a hard output bound: a block never expands past `maxLength` (zip bombs). */
export function decompressBlock (bytes: Uint8Array, maxLength: number): Uint8Array {
  return inflateRawSync(bytes, { maxOutputLength: maxLength })
}

/** The bytes a block costs on the wire. */
export function wireSize (bytes: Uint8Array): number {
  return compressBlock(bytes)?.length ?? bytes.length
}
