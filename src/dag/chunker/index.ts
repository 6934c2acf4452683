import { fixedChunker } from './fixed.js'
import { fastcdcChunker } from './fastcdc.js'
import { InvalidChunkSizeError, UsageError } from '../../errors.js'
import type { Chunker, ChunkerKind, ChunkerParams } from './interface.js'

export type { Chunk, Chunker, ChunkerKind, ChunkerParams, ChunkerOptions } from './interface.js'
export { fastcdcBounds } from './fastcdc.js'

/**
 * The default chunking, chosen by bench/update-bytes (docs/benchmarks.md): FastCDC at 16 KiB moved
 * the fewest wire bytes for a real kernel update while keeping the block count manageable.
 */
export const DEFAULT_CHUNKER: ChunkerParams = { kind: 'fastcdc', size: 16 * 1024 }

export const MIN_CHUNK_SIZE = 4 * 1024
/** Largest fixed chunk; FastCDC's max is 4x its average, so its average stops at a quarter of this. */
export const MAX_CHUNK_SIZE = 1024 * 1024

const CHUNKERS: Record<ChunkerKind, Chunker> = {
  fixed: fixedChunker,
  fastcdc: fastcdcChunker
}

export function getChunker (kind: ChunkerKind): Chunker {
  return CHUNKERS[kind]
}

/** Validates user-given chunking parameters; sizes are powers of two between 4 KiB and 1 MiB. */
export function chunkerParams (kind: string | undefined, size: number | undefined): ChunkerParams {
  const k = kind ?? DEFAULT_CHUNKER.kind
  if (k !== 'fixed' && k !== 'fastcdc') throw new UsageError(`unknown chunker "${k}" (expected fixed or fastcdc)`)
  const s = size ?? (k === DEFAULT_CHUNKER.kind ? DEFAULT_CHUNKER.size : 64 * 1024)
  const maxSize = k === 'fastcdc' ? MAX_CHUNK_SIZE / 4 : MAX_CHUNK_SIZE
  if (!Number.isInteger(s) || s < MIN_CHUNK_SIZE || s > maxSize || (s & (s - 1)) !== 0) {
    throw new InvalidChunkSizeError(`chunk size ${size} is not a power of two from ${MIN_CHUNK_SIZE} to ${maxSize} bytes for ${k}`)
  }
  return { kind: k, size: s }
}
