import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import { countReads } from '../helpers/store.js'
import type { Block } from '../../src/store/interface.js'

/**
 * Blocks a store wrote itself through the page cache (landed in its active pack) are served with
 * synchronous reads; blocks from before it opened, and everything for a while after a slow
 * synchronous read, go to the threadpool. Either way every block comes back whole and verified, at
 * its place.
 */
describe('Blockstore: serving what it just wrote', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  const blocks = (seed: string, n: number): Block[] => Array.from({ length: n }, (_, i) => {
    const bytes = pseudoRandom(`${seed}-${i}`, 16 * 1024 + i)
    return { cid: rawCid(bytes), bytes }
  })

  async function expectServed (store: Blockstore, set: Block[]): Promise<void> {
    // Every other block, in reverse order: several spans, answers at their places.
    const ask = set.filter((_, i) => i % 2 === 0).reverse()
    const got = await store.readMany(ask.map(b => b.cid))
    got.forEach((bytes, i) => { expect(Buffer.from(bytes!).equals(Buffer.from(ask[i]!.bytes))).toBe(true) })
  }

  it('reads its own landed writes synchronously, older packs and bytes on the threadpool, and backs off after a slow read', async () => {
    const path = join(dir, 'a')
    const old = blocks('old', 40)
    let store = await Blockstore.open(path)
    await store.putMany(old, { trusted: true })
    await store.commit()
    await store.close()

    // Reopened: the old blocks were written by another process (maybe not cached); new ones by this
    // one, through the page cache (appends written direct are not in it: direct.spec.ts).
    store = await Blockstore.open(path, { directWrites: false })
    try {
      const fresh = blocks('new', 40)
      await store.putMany(fresh, { trusted: true })
      await store.commit()
      // The pack is opened for reads by a first read.
      await store.readMany([old[0]!.cid])

      let counts = countReads(store)
      await expectServed(store, fresh)
      expect(counts.now).toBeGreaterThan(0)
      expect(counts.pool).toBe(0)

      counts = countReads(store)
      await expectServed(store, old)
      expect(counts.now).toBe(0)
      expect(counts.pool).toBeGreaterThan(0)

      // Synchronous reads that took 200 ms: the page cache had dropped the bytes. None for a while.
      store.packs.syncReadsTook(performance.now() - 200)
      expect(store.packs.syncReads).toBe(false)
      counts = countReads(store)
      await expectServed(store, fresh)
      expect(counts.now).toBe(0)
      expect(counts.pool).toBeGreaterThan(0)
    } finally {
      await store.close()
    }
  })
})
