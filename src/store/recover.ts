import { open } from 'node:fs/promises'
import type { CID } from 'multiformats/cid'
import { decodeCid, verifyBlock } from '../dag/hash.js'
import { MAX_BLOCK_SIZE } from '../dag/node.js'
import { RECORD_HEADER } from './packs.js'

/** A record found past a pack's committed length: its block's CID, and where its payload is. */
export interface TailRecord {
  cid: CID
  offset: number
  length: number
}

/** Bytes of the pack read at a time (a record is at most MAX_BLOCK_SIZE and its header). */
const READ_BYTES = 8 * 1024 * 1024

/**
 * The whole records past `from` in the pack at `path` whose payload hashes to their CID, in order,
 * up to the first that is not one: a write torn by a crash, the padding after a direct write, a
 * record a failed write left half done. `end` is where the last good record ends (`from` if none).
 *
 * A process killed between a write and its commit leaves such records: the write reached the file
 * (the page cache outlives the process; a direct write is on the device), the index entries did not.
 * Every record is hashed, so whatever is found is its block's bytes, whoever wrote it: a stale record
 * that padding happens to repeat is a good block too. A missing pack has no records.
 */
export async function scanTail (path: string, from: number): Promise<{ records: TailRecord[], end: number }> {
  let file
  try {
    file = await open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], end: from }
    throw err
  }
  try {
    const size = (await file.stat()).size
    let buffer = Buffer.alloc(0)
    let bufferAt = from
    /** `length` bytes of the pack at `at`, or undefined past its end. */
    const bytes = async (at: number, length: number): Promise<Uint8Array | undefined> => {
      if (at + length > size) return undefined
      if (at < bufferAt || at + length > bufferAt + buffer.length) {
        buffer = Buffer.allocUnsafe(Math.min(size - at, Math.max(length, READ_BYTES)))
        bufferAt = at
        for (let done = 0; done < buffer.length;) {
          const { bytesRead } = await file.read(buffer, done, buffer.length - done, at + done)
          if (bytesRead === 0) return undefined
          done += bytesRead
        }
      }
      return buffer.subarray(at - bufferAt, at - bufferAt + length)
    }
    const records: TailRecord[] = []
    let at = from
    for (;;) {
      const header = await bytes(at, RECORD_HEADER)
      if (header == null) break
      const length = ((header[0]! << 24) >>> 0) + (header[1]! << 16) + (header[2]! << 8) + header[3]!
      const cidLength = header[4]!
      if (length > MAX_BLOCK_SIZE || cidLength === 0) break
      const record = await bytes(at, RECORD_HEADER + cidLength + length)
      if (record == null) break
      let cid: CID
      try {
        // A copy: a view would keep the whole read buffer alive as long as the CID.
        cid = decodeCid(new Uint8Array(record.subarray(RECORD_HEADER, RECORD_HEADER + cidLength)))
      } catch {
        break
      }
      if (!verifyBlock(cid, record.subarray(RECORD_HEADER + cidLength))) break
      records.push({ cid, offset: at + RECORD_HEADER + cidLength, length })
      at += record.length
    }
    return { records, end: at }
  } finally {
    await file.close()
  }
}
