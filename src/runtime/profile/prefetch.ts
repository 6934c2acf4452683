import { DiskReader, type BlockGetter, type LeafEntry } from '../../dag/index.js'
import { throwIfAborted } from '../../util/abort.js'
import type { CID } from 'multiformats/cid'
import type { BootProfile, PrefetchEvent } from './interface.js'

/** Bytes asked for in one request. */
const BATCH_BYTES = 512 * 1024
/** Requests in flight at once: 4 MiB ahead of the boot, like a pull's per-peer window. */
const WINDOW = 8

/** Where a prefetch gets the DAGs and the blocks. */
export interface PrefetchSource {
  /** The disks a profile's indices name: each root, and where its interior nodes come from. */
  disks: Array<{ root: CID, blocks: BlockGetter }>
  /** Which of these blocks the store holds already (not fetched again). */
  hasMany(cids: CID[]): Promise<boolean[]>
  /** Blocks of `root` at prefetch priority: behind demand reads, ahead of background pulls; stored. */
  fetch(root: CID, cids: CID[], options: { signal?: AbortSignal, priority: 1 }): Promise<Uint8Array[]>
}

export interface PrefetchOptions {
  signal?: AbortSignal
  onProgress?(event: PrefetchEvent): void
  /** @default 512 KiB */
  batchBytes?: number
  /** @default 8 */
  window?: number
}

export interface PrefetchResult {
  /** Blocks (and their bytes) fetched from peers. */
  blocks: number
  bytes: number
  /** Blocks of the profile that were already in the store. */
  local: number
  /** Blocks no peer sent in time (the guest's own read will ask again). */
  failed: number
  ms: number
}

/**
 * Fetches the blocks behind a boot profile's ranges, in the profile's order, at prefetch priority,
 * with a bounded window of requests in flight: the blocks a boot reads next arrive before it asks.
 * Ranges naming a disk the VM does not have are skipped. A block that cannot be fetched is counted,
 * not fatal: the demand read of the guest asks for it again.
 */
export async function prefetchProfile (profile: BootProfile, source: PrefetchSource, options: PrefetchOptions = {}): Promise<PrefetchResult> {
  const started = Date.now()
  const { signal } = options
  const batchLimit = options.batchBytes ?? BATCH_BYTES
  const window = options.window ?? WINDOW
  const readers = new Map<number, DiskReader>()
  const seen = new Set<string>()
  const inflight = new Set<Promise<void>>()
  const result: PrefetchResult = { blocks: 0, bytes: 0, local: 0, failed: 0, ms: 0 }
  let batch: LeafEntry[] = []
  let batchDisk = -1
  let batchBytes = 0

  const progress = (): void => { options.onProgress?.({ type: 'profile:progress', blocks: result.blocks, bytes: result.bytes, local: result.local }) }

  const flush = async (): Promise<void> => {
    if (batch.length === 0) return
    const cids = batch.map(l => l.cid!)
    const root = source.disks[batchDisk]!.root
    batch = []
    batchBytes = 0
    const present = await source.hasMany(cids)
    const missing = cids.filter((_, i) => present[i] !== true)
    result.local += cids.length - missing.length
    if (missing.length === 0) return
    while (inflight.size >= window) await Promise.race(inflight)
    throwIfAborted(signal)
    const request: Promise<void> = source.fetch(root, missing, { signal, priority: 1 }).then(blocks => {
      result.blocks += blocks.length
      result.bytes += blocks.reduce((n, b) => n + b.length, 0)
      progress()
    }, () => {
      if (signal?.aborted !== true) result.failed += missing.length
    }).finally(() => { inflight.delete(request) })
    inflight.add(request)
  }

  try {
    for (const [disk, offset, length] of profile.reads) {
      throwIfAborted(signal)
      const target = source.disks[disk]
      if (target == null) continue
      let reader = readers.get(disk)
      if (reader == null) readers.set(disk, reader = await DiskReader.open(target.root, target.blocks, { signal }))
      if (disk !== batchDisk) { await flush(); batchDisk = disk }
      for await (const leaf of reader.leavesIn(offset, length, { signal })) {
        if (leaf.cid == null) continue
        const key = leaf.cid.toString()
        if (seen.has(key)) continue
        seen.add(key)
        batch.push(leaf)
        batchBytes += leaf.length
        if (batchBytes >= batchLimit) await flush()
      }
    }
    await flush()
  } finally {
    await Promise.all(inflight)
  }
  throwIfAborted(signal)
  result.ms = Date.now() - started
  return result
}
