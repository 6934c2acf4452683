import { deflateRawSync, inflateRawSync } from 'node:zlib'

/**
 * Block compression on the wire: raw DEFLATE at level 1 (fast; disk data is mostly code and text,
 * and zero padding inside chunks). A block is sent compressed only when that makes it smaller.
 */
export const WIRE_COMPRESSION = 'deflate-raw'
const LEVEL = 1

/** Bytes of a block looked at first, and the entropy (bits per byte) above which it is sent as it is. */
const SAMPLE = 1024
const INCOMPRESSIBLE_BITS = 7.2

/**
 * `-c × log2(c / SAMPLE)` for every count c a byte value can have in the sample: a server looks at
 * every block it sends, and computing the 250-odd logarithms of a random sample each time was ~3 %
 * of a loopback pull's CPU (perf: `ieee754::log2`). The same products, summed in the same order,
 * as computing them each time.
 */
const TERMS = Float64Array.from({ length: SAMPLE + 1 }, (_, c) => c === 0 ? 0 : -c * Math.log2(c / SAMPLE))
/** Counts of the sample's byte values (reused: the entropy runs synchronously). */
const COUNTS = new Uint32Array(256)

/** Shannon entropy of the first SAMPLE bytes (`bytes` has at least that many): ~8 for random or already-compressed data. */
function sampleEntropy (bytes: Uint8Array): number {
  const counts = COUNTS
  counts.fill(0)
  for (let i = 0; i < SAMPLE; i++) counts[bytes[i]!]!++
  let bits = 0
  for (let b = 0; b < 256; b++) bits += TERMS[counts[b]!]!
  return bits / SAMPLE
}

/** Random or already-compressed at a glance (a few microseconds, where compressing costs tens). */
export function looksIncompressible (bytes: Uint8Array): boolean {
  return bytes.length >= SAMPLE * 4 && sampleEntropy(bytes) > INCOMPRESSIBLE_BITS
}

/**
 * The block compressed, or undefined when that would not pay. Deflating incompressible data (most
 * of a disk's binaries, every already-compressed file) costs more CPU than sending it: the exchange
 * moved 38 MiB/s with every block deflated vs 67 MiB/s without (bench/exchange). A look at the
 * first 1 KiB's byte entropy (a few microseconds, where a deflate call costs tens) decides first;
 * both sides agree, since `wireSize` uses the same rule.
 */
export function compressBlock (bytes: Uint8Array): Uint8Array | undefined {
  if (looksIncompressible(bytes)) return undefined
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
