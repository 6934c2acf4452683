import type { Blockstore } from '../../src/store/blockstore.js'

/** Counts a store's synchronous (page cache) and threadpool pack reads from now on. */
export function countReads (store: Blockstore): { now: number, pool: number } {
  const counts = { now: 0, pool: 0 }
  const packs = store.packs as unknown as Record<string, (...a: unknown[]) => unknown>
  const readvNow = packs.readvNow!.bind(store.packs)
  const read = packs.read!.bind(store.packs)
  packs.readvNow = (...a: unknown[]) => { counts.now++; return readvNow(...a) }
  packs.read = (...a: unknown[]) => { counts.pool++; return read(...a) }
  return counts
}
