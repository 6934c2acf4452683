/** Zero detection works on 4 KiB blocks aligned to the image, the unit of every filesystem's holes. */
export const ZERO_BLOCK = 4096

/**
 * A run of at least this many zero bytes (whole aligned 4 KiB blocks) is a hole for FastCDC: it has
 * no block, and chunking restarts after it. Smaller runs stay inside data chunks, so a file's tail
 * padding does not fragment chunks.
 */
export const MIN_ZERO_RUN = 32 * 1024

const ZEROS = new Uint8Array(1024 * 1024)

/** True when `buf[start..end)` is all zeros (native memcmp, 64 KiB at a time). */
export function isZero (buf: Uint8Array, start: number, end: number): boolean {
  // Data usually has a non-zero byte early; a JS look at the first bytes avoids a native call.
  const probe = Math.min(end, start + 32)
  for (let i = start; i < probe; i++) if (buf[i] !== 0) return false
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  for (let p = start; p < end; p += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - p)
    if (b.compare(ZEROS, 0, n, p, p + n) !== 0) return false
  }
  return true
}
