import { verifyBlock, parseCid } from '../dag/hash.js'
import { DiskReader } from '../dag/reader.js'
import { throwIfAborted } from '../util/abort.js'
import type { Blockstore } from './blockstore.js'
import type { Pins } from './pins.js'
import type { FsckResult, StoreProgressEvent } from './interface.js'
import type { CID } from 'multiformats/cid'

export interface FsckOptions {
  signal?: AbortSignal
  onProgress?(event: StoreProgressEvent): void
}

/**
 * Re-hashes every block. A block whose bytes do not match (a flipped bit, a pack cut short) is
 * reported and dropped from the index, so the next pull fetches it again instead of serving it.
 * Then every pin is walked: a pin whose DAG is missing a block is reported as incomplete.
 */
export async function fsck (store: Blockstore, pins: Pins, options: FsckOptions = {}): Promise<FsckResult> {
  await store.commit()
  const corrupt: Array<{ cid: CID, key: Uint8Array }> = []
  let blocks = 0
  let bytes = 0
  for await (const { cid, key, entry } of store.entries()) {
    throwIfAborted(options.signal)
    const data = await store.packs.read(entry)
    if (data == null || !verifyBlock(cid, data)) corrupt.push({ cid, key })
    blocks++
    bytes += entry.length
    if (blocks % 4096 === 0) options.onProgress?.({ type: 'fsck:progress', blocks, bytes })
  }
  await store.deleteMany(corrupt.map(c => c.key))

  const incomplete: FsckResult['incomplete'] = []
  for (const pin of await pins.list()) {
    const missing = await firstMissing(store, parseCid(pin.root), options.signal)
    if (missing != null) incomplete.push({ name: pin.name, missing })
  }
  return { blocks, bytes, corrupt: corrupt.map(c => c.cid.toString()), incomplete }
}

/** The first block of a DAG that the store lacks, or undefined when the DAG is complete. */
export async function firstMissing (store: Blockstore, root: CID, signal?: AbortSignal): Promise<string | undefined> {
  if (!await store.has(root)) return root.toString()
  try {
    const reader = await DiskReader.open(root, store)
    let batch: CID[] = []
    const check = async (): Promise<string | undefined> => {
      const present = await store.hasMany(batch)
      const i = present.indexOf(false)
      const missing = i >= 0 ? batch[i]!.toString() : undefined
      batch = []
      return missing
    }
    for await (const leaf of reader.walk({ signal })) {
      if (leaf.cid == null) continue
      batch.push(leaf.cid)
      if (batch.length >= 1024) {
        const missing = await check()
        if (missing != null) return missing
      }
    }
    return await check()
  } catch (err: any) {
    if (err?.code === 'ERR_BLOCK_MISSING' || err?.code === 'ERR_HASH_MISMATCH') {
      return /block (\S+)/.exec(err.message)?.[1] ?? root.toString()
    }
    throw err
  }
}
