import { open, rename, unlink } from 'node:fs/promises'
import { DiskReader, type BlockGetter } from './reader.js'
import { fromSystemError } from '../errors.js'
import { throwIfAborted } from '../util/abort.js'
import type { CID } from 'multiformats/cid'

export type ExportProgressEvent = { type: 'export:progress', written: number, size: number }

export interface ExportOptions {
  signal?: AbortSignal
  onProgress?(event: ExportProgressEvent): void
}

/**
 * Writes the image back: byte-identical, sparse (holes are never written; the file is sized with
 * ftruncate so they read as zeros), into a temporary file renamed into place only when complete.
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
  try {
    await fd.truncate(reader.size)
    // Fetch a few leaves ahead so reads overlap writes.
    const inflight: Array<Promise<{ offset: number, bytes: Uint8Array }>> = []
    const drain = async (): Promise<void> => {
      const { offset, bytes } = await inflight.shift()!
      let done = 0
      while (done < bytes.length) {
        const { bytesWritten } = await fd!.write(bytes, done, bytes.length - done, offset + done)
        done += bytesWritten
      }
      written += bytes.length
      if (written % (64 * 1024 * 1024) < bytes.length) options.onProgress?.({ type: 'export:progress', written, size: reader.size })
    }
    for await (const leaf of reader.walk(options)) {
      if (leaf.cid == null) continue
      throwIfAborted(options.signal)
      const cid = leaf.cid
      const p = blocks.get(cid, options).then(bytes => {
        if (bytes.length !== leaf.length) throw new Error(`leaf ${cid} has ${bytes.length} bytes, its parent says ${leaf.length}`)
        return { offset: leaf.offset, bytes }
      })
      p.catch(() => {})
      inflight.push(p)
      if (inflight.length >= 16) await drain()
    }
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
