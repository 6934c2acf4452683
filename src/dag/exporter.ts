import { open, rename, unlink, type FileHandle } from 'node:fs/promises'
import { DiskReader, type BlockGetter, type LeafEntry } from './reader.js'
import { fromSystemError } from '../errors.js'
import { throwIfAborted } from '../util/abort.js'
import type { CID } from 'multiformats/cid'

export type ExportProgressEvent = { type: 'export:progress', written: number, size: number }

export interface ExportOptions {
  signal?: AbortSignal
  onProgress?(event: ExportProgressEvent): void
}

/** Leaves read from the store at once (one index round trip, adjacent records in one pread). */
const READ_BATCH = 64
/** Batches read ahead of the one being written. */
const READ_AHEAD = 3

/** Reads many blocks at once when the getter can (the store, lazy blocks), else one by one. */
async function getMany (blocks: BlockGetter, cids: CID[], options: { signal?: AbortSignal }): Promise<Uint8Array[]> {
  if (blocks.getMany != null) return await blocks.getMany(cids, options)
  return await Promise.all(cids.map(async cid => await blocks.get(cid, options)))
}

/**
 * Writes the image back: byte-identical, sparse (holes are never written; the file is sized with
 * ftruncate so they read as zeros), into a temporary file renamed into place only when complete.
 * Leaves are read READ_BATCH at a time, READ_AHEAD batches ahead, and each run of adjacent leaves is
 * one writev.
 */
export async function exportImage (blocks: BlockGetter, root: CID, path: string, options: ExportOptions = {}): Promise<{ size: number, written: number }> {
  const reader = await DiskReader.open(root, blocks, options)
  const tmp = `${path}.partial-${process.pid}`
  let fd
  try {
    fd = await open(tmp, 'w')
  } catch (err) {
    throw fromSystemError(err, path)
  }
  let written = 0
  let reported = 0
  try {
    await fd.truncate(reader.size)
    const inflight: Array<Promise<{ leaves: LeafEntry[], bytes: Uint8Array[] }>> = []
    const read = (leaves: LeafEntry[]): void => {
      const p = getMany(blocks, leaves.map(l => l.cid!), options).then(bytes => {
        leaves.forEach((leaf, i) => {
          if (bytes[i]!.length !== leaf.length) throw new Error(`leaf ${leaf.cid} has ${bytes[i]!.length} bytes, its parent says ${leaf.length}`)
        })
        return { leaves, bytes }
      })
      p.catch(() => {})
      inflight.push(p)
    }
    const drain = async (): Promise<void> => {
      const { leaves, bytes } = await inflight.shift()!
      for (let i = 0; i < leaves.length;) {
        // A run of leaves that follow each other on the disk: one writev.
        let j = i + 1
        while (j < leaves.length && leaves[j]!.offset === leaves[j - 1]!.offset + leaves[j - 1]!.length) j++
        await writeAll(fd!, bytes.slice(i, j), leaves[i]!.offset)
        i = j
      }
      written += bytes.reduce((n, b) => n + b.length, 0)
      if (written - reported >= 64 * 1024 * 1024) {
        reported = written
        options.onProgress?.({ type: 'export:progress', written, size: reader.size })
      }
    }
    let batch: LeafEntry[] = []
    for await (const leaf of reader.walk(options)) {
      if (leaf.cid == null) continue
      throwIfAborted(options.signal)
      batch.push(leaf)
      if (batch.length < READ_BATCH) continue
      read(batch)
      batch = []
      if (inflight.length > READ_AHEAD) await drain()
    }
    if (batch.length > 0) read(batch)
    while (inflight.length > 0) await drain()
    await fd.datasync()
    await fd.close()
    fd = undefined
    await rename(tmp, path)
  } catch (err) {
    await fd?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw fromSystemError(err, path)
  }
  options.onProgress?.({ type: 'export:progress', written, size: reader.size })
  return { size: reader.size, written }
}

/** writev until every byte of `buffers` is at `position` (a short write continues where it stopped). */
async function writeAll (fd: FileHandle, buffers: Uint8Array[], position: number): Promise<void> {
  let total = buffers.reduce((n, b) => n + b.length, 0)
  while (total > 0) {
    const { bytesWritten } = await fd.writev(buffers, position)
    if (bytesWritten === total) return
    total -= bytesWritten
    position += bytesWritten
    let skip = bytesWritten
    while (skip >= buffers[0]!.length) skip -= buffers.shift()!.length
    buffers = [buffers[0]!.subarray(skip), ...buffers.slice(1)]
  }
}
