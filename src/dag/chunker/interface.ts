import type { ImageSource } from '../source/interface.js'

/**
 * One piece of the image, in order. `bytes` is absent for a run of zeros (a hole): holes are not
 * stored and have no block. `bytes` is a view into the chunker's read buffer, valid until the
 * generator is resumed: a consumer that keeps it must copy it.
 */
export interface Chunk {
  offset: number
  length: number
  bytes?: Uint8Array
}

export type ChunkerKind = 'fixed' | 'fastcdc'

/** The chunking parameters recorded in a disk root: the same parameters and bytes give the same root. */
export interface ChunkerParams {
  kind: ChunkerKind
  /** Fixed: the chunk size. FastCDC: the average (normal) size; min is avg/4, max avg*4. */
  size: number
}

export interface ChunkerOptions {
  signal?: AbortSignal
  /** Called as the chunker reads through the image (bytes scanned so far, holes included). */
  onScan?(position: number): void
}

/** A chunker is a swappable async-generator stage (source in, chunks out). */
export type Chunker = (source: ImageSource, params: ChunkerParams, options?: ChunkerOptions) => AsyncGenerator<Chunk>
