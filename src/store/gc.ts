import { DiskReader } from '../dag/reader.js'
import { blockId, parseCid } from '../dag/hash.js'
import { throwIfAborted } from '../util/abort.js'
import { BlockMissingError, StoreCorruptError } from '../errors.js'
import type { Blockstore } from './blockstore.js'
import type { Pins } from './pins.js'
import type { GcResult, StoreProgressEvent } from './interface.js'
import type { CID } from 'multiformats/cid'

/** A pack whose live bytes fall below this share is rewritten to give its dead bytes back. */
const COMPACT_BELOW = 0.5
/** Live blocks moved per commit during compaction. */
const MOVE_BATCH = 32 * 1024 * 1024

export interface GcOptions {
  signal?: AbortSignal
  onProgress?(event: StoreProgressEvent): void
}


/** Every block reachable from the pins (leaves are listed, not read). */
export async function liveSet (store: Blockstore, pins: Pins, options: GcOptions = {}): Promise<Set<string>> {
  const live = new Set<string>()
  for (const pin of await pins.list()) {
    const root = parseCid(pin.root)
    live.add(blockId(root))
    try {
      const reader = await DiskReader.open(root, store, options)
      for await (const leaf of reader.walk({
        signal: options.signal,
        enter: cid => !live.has(blockId(cid)),
        onNode: ({ cid }) => { live.add(blockId(cid)) }
      })) {
        if (leaf.cid != null) live.add(blockId(leaf.cid))
      }
    } catch (err) {
      if (err instanceof BlockMissingError) {
        throw new StoreCorruptError(`pin "${pin.name}" is incomplete (${err.message}); pull it again or unpin it before gc`)
      }
      throw err
    }
    options.onProgress?.({ type: 'gc:mark', blocks: live.size })
  }
  return live
}

/**
 * Mark and sweep: index entries not reachable from a pin are dropped, then packs that are mostly
 * dead are rewritten (live blocks copied to the active pack and committed before the old pack is
 * deleted, so a crash loses nothing).
 */
export async function collectGarbage (store: Blockstore, pins: Pins, options: GcOptions = {}): Promise<GcResult> {
  await store.commit()
  const live = await liveSet(store, pins, options)
  const dead: Uint8Array[] = []
  let bytesRemoved = 0
  const packLive = new Map<number, number>()
  for await (const { cid, key, entry } of store.entries()) {
    if (live.has(blockId(cid))) {
      packLive.set(entry.pack, (packLive.get(entry.pack) ?? 0) + entry.length)
    } else {
      dead.push(key)
      bytesRemoved += entry.length
    }
  }
  throwIfAborted(options.signal)
  await store.deleteMany(dead)
  options.onProgress?.({ type: 'gc:sweep', blocksRemoved: dead.length })

  let packsRewritten = 0
  let bytesReclaimed = 0
  const { stat } = await import('node:fs/promises')
  for (const pack of await store.packs.ids()) {
    if (pack === store.activePack) continue
    throwIfAborted(options.signal)
    const size = (await stat(store.packs.path(pack))).size
    const liveBytes = packLive.get(pack) ?? 0
    if (liveBytes > size * COMPACT_BELOW) continue
    let batch: Array<{ cid: CID, bytes: Uint8Array }> = []
    let batchBytes = 0
    for await (const { cid, entry } of store.entries()) {
      if (entry.pack !== pack) continue
      batch.push({ cid, bytes: await store.get(cid) })
      batchBytes += entry.length
      if (batchBytes >= MOVE_BATCH) {
        await store.relocate(batch)
        batch = []
        batchBytes = 0
      }
    }
    await store.relocate(batch)
    await store.packs.remove(pack)
    packsRewritten++
    bytesReclaimed += size - liveBytes
  }
  return { blocksRemoved: dead.length, bytesRemoved, packsRewritten, bytesReclaimed }
}
