import { basename } from 'node:path'
import { openImage } from './source/index.js'
import { getChunker, DEFAULT_CHUNKER } from './chunker/index.js'
import { LayoutBuilder, type EncodedBlock } from './layout.js'
import { DEFAULT_FANOUT, MAX_BLOCK_SIZE } from './node.js'
import { blockId, rawCid } from './hash.js'
import type { ChunkerParams } from './chunker/interface.js'
import type { Blockstore } from '../store/blockstore.js'
import type { CID } from 'multiformats/cid'

/** Blocks handed to the store per call; big enough to amortise the index lookups. */
const BATCH_BYTES = 8 * 1024 * 1024

export type ImportProgressEvent =
  | { type: 'import:start', size: number, format: string }
  | { type: 'import:progress', scanned: number, size: number, bytesStored: number }

export interface ImportOptions {
  chunker?: ChunkerParams
  fanout?: number
  /** Forced image format (default: detected). */
  format?: string
  /** Where a temporary raw conversion may go when an image cannot be read in place. */
  tmpDir: string
  signal?: AbortSignal
  onProgress?(event: ImportProgressEvent): void
}

export interface ImportResult {
  root: CID
  size: number
  format: string
  /** Distinct blocks in the DAG (leaves and nodes). */
  blocks: number
  /** Bytes this import added to the store (0 when every block was already there). */
  bytesStored: number
}

/**
 * Imports a disk image: chunk, hash, store new blocks, build the DAG. The result is durable (the
 * store is committed) but not pinned: the caller pins it, so a crash never leaves a pin without its
 * blocks. Re-importing after a crash reuses every block already committed.
 */
export async function importImage (store: Blockstore, path: string, options: ImportOptions): Promise<ImportResult> {
  const params = options.chunker ?? DEFAULT_CHUNKER
  const source = await openImage(path, { format: options.format, tmpDir: options.tmpDir })
  try {
    options.onProgress?.({ type: 'import:start', size: source.size, format: source.format })
    const seen = new Set<string>()
    let batch: EncodedBlock[] = []
    let batchBytes = 0
    // Chunk bytes are only valid until the chunker resumes: copy them into an arena reused per batch.
    const arena = new Uint8Array(BATCH_BYTES + MAX_BLOCK_SIZE)
    let arenaUsed = 0
    let bytesStored = 0
    const queue = (block: EncodedBlock): void => {
      const id = blockId(block.cid)
      if (seen.has(id)) return
      seen.add(id)
      batch.push(block)
      batchBytes += block.bytes.length
    }
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return
      const result = await store.putMany(batch, { trusted: true })
      bytesStored += result.bytes
      batch = []
      batchBytes = 0
      arenaUsed = 0
    }
    const layout = new LayoutBuilder(source.size, params, options.fanout ?? DEFAULT_FANOUT, queue)
    let scanned = 0
    for await (const chunk of getChunker(params.kind)(source, params, { signal: options.signal })) {
      if (chunk.bytes == null) {
        layout.addLeaf(chunk.offset, chunk.length, null)
      } else {
        const cid = rawCid(chunk.bytes)
        if (!seen.has(blockId(cid))) {
          const copy = arena.subarray(arenaUsed, arenaUsed + chunk.length)
          copy.set(chunk.bytes)
          arenaUsed += chunk.length
          queue({ cid, bytes: copy })
        }
        layout.addLeaf(chunk.offset, chunk.length, cid)
      }
      scanned = chunk.offset + chunk.length
      if (batchBytes >= BATCH_BYTES) {
        await flush()
        options.onProgress?.({ type: 'import:progress', scanned, size: source.size, bytesStored })
      }
    }
    const root = layout.finish()
    await flush()
    await store.commit()
    options.onProgress?.({ type: 'import:progress', scanned: source.size, size: source.size, bytesStored })
    return { root: root.cid, size: source.size, format: source.format, blocks: seen.size, bytesStored }
  } finally {
    await source.close()
  }
}

/** The pin name an image gets when none is given: its file name without the extension. */
export function defaultName (path: string): string {
  return basename(path).replace(/\.(img|raw|qcow2|vmdk|vdi|vhdx|vpc|iso)$/i, '').replace(/[^A-Za-z0-9._@:+-]/g, '_').replace(/^[^A-Za-z0-9]+/, '') || 'image'
}
