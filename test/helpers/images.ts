import { open } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { createHash } from 'node:crypto'

/** Deterministic pseudo-random bytes (SHA-256 in counter mode over a seed): same seed, same bytes. */
export function pseudoRandom (seed: string, length: number): Uint8Array {
  const out = new Uint8Array(length)
  let counter = 0
  for (let pos = 0; pos < length; pos += 32) {
    const block = createHash('sha256').update(`${seed}:${counter++}`).digest()
    out.set(block.subarray(0, Math.min(32, length - pos)), pos)
  }
  return out
}

/**
 * Writes an image of `size` bytes: each extent [offset, length, seed] filled with pseudo-random
 * data, everything else left as holes (the file is sparse).
 */
export async function writeImage (path: string, size: number, extents: Array<[number, number, string]>): Promise<void> {
  const fd = await open(path, 'w')
  try {
    await fd.truncate(size)
    for (const [offset, length, seed] of extents) {
      const bytes = pseudoRandom(seed, length)
      await fd.write(bytes, 0, length, offset)
    }
  } finally {
    await fd.close()
  }
}

/** SHA-256 of a file, streamed (images are large). */
export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
