import { blake3 } from '@napi-rs/blake-hash'

/**
 * FastCDC's gear table: 256 pseudo-random 32-bit words. Derived, not pasted: word i is the first four
 * bytes (little-endian) of BLAKE3("collective-peer/fastcdc/gear/v1" || i). Changing it changes every
 * FastCDC root, so it is versioned by its seed string.
 */
export const GEAR_SEED = 'collective-peer/fastcdc/gear/v1'

export const GEAR: Int32Array = (() => {
  const table = new Int32Array(256)
  const seed = Buffer.from(GEAR_SEED)
  for (let i = 0; i < 256; i++) {
    const digest = blake3(Buffer.concat([seed, Buffer.from([i])]))
    table[i] = digest.readInt32LE(0)
  }
  return table
})()

/**
 * A mask of `bits` ones in the high bits of a 32-bit word (the bits that see the most bytes), below
 * bit 31 so that `mask << 1` still fits: the chunker tests the hash shifted by one bit.
 */
export function highMask (bits: number): number {
  return (((1 << bits) - 1) << (31 - bits)) | 0
}

/** GEAR shifted left by one: lets the chunker roll two bytes per step. */
export const GEAR_LS: Int32Array = GEAR.map(g => g << 1)
