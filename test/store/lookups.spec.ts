import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { digestId, rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'

/**
 * Index lookups of many keys run as several LevelDB getMany calls at once (a pull's first look at
 * its leaves): every answer must land at its key's place, whatever order the calls finish in.
 */
describe('Blockstore: lookups of many keys', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('answers 20 000 keys (several batches in flight) each at its own place', async () => {
    const store = await Blockstore.open(join(dir, 'a'))
    try {
      const blocks = Array.from({ length: 20_000 }, (_, i) => {
        const bytes = pseudoRandom(`lookup-${i}`, 64)
        return { cid: rawCid(bytes), bytes }
      })
      // Every 67th block stored and committed (index entries in LevelDB), one more only written.
      const stored = blocks.filter((_, i) => i % 67 === 0)
      await store.putMany(stored, { trusted: true })
      await store.commit()
      await store.putMany([blocks[20_000 - 1]!], { trusted: true })
      const expected = blocks.map((_, i) => i % 67 === 0 || i === 20_000 - 1)
      expect(await store.hasMany(blocks.map(b => b.cid))).toEqual(expected)
      // By digest with the caller's ids (a skeleton's), and once nothing is pending.
      const digests = blocks.map(b => b.cid.multihash.digest)
      expect(await store.hasDigests(digests, digests.map(digestId))).toEqual(expected)
      await store.commit()
      expect(await store.hasDigests(digests)).toEqual(expected)
      const located = await store.locateMany(blocks.map(b => b.cid.multihash.digest))
      expect(Array.from(located, (loc, i) => loc != null || i === 20_000 - 1)).toEqual(expected)
      // Reads through the same lookups return each block's own bytes.
      const some = [0, 67, 134, 19_966].map(i => blocks[i]!)
      const read = await store.readMany(some.map(b => b.cid))
      read.forEach((bytes, i) => { expect(Buffer.from(bytes!).equals(Buffer.from(some[i]!.bytes))).toBe(true) })
    } finally {
      await store.close()
    }
  })

  it('a new store asks LevelDB for no block until its first commit, and finds blocks after it, and after a reopen', async () => {
    const path = join(dir, 'new')
    const blocks = Array.from({ length: 300 }, (_, i) => {
      const bytes = pseudoRandom(`new-store-${i}`, 64)
      return { cid: rawCid(bytes), bytes }
    })
    const digests = blocks.map(b => b.cid.multihash.digest)
    const counted = (store: Blockstore): { gets: number } => {
      const calls = { gets: 0 }
      const db = store.db as unknown as { getMany: (...a: unknown[]) => unknown, get: (...a: unknown[]) => unknown }
      const getMany = db.getMany.bind(db)
      const get = db.get.bind(db)
      db.getMany = (...a: unknown[]) => { calls.gets++; return getMany(...a) }
      db.get = (...a: unknown[]) => { calls.gets++; return get(...a) }
      return calls
    }
    let store = await Blockstore.open(path)
    try {
      const calls = counted(store)
      expect(await store.hasMany(blocks.map(b => b.cid))).toEqual(blocks.map(() => false))
      expect(await store.has(blocks[0]!.cid)).toBe(false)
      // Written, not committed: found in memory, still without LevelDB.
      await store.putMany(blocks.slice(0, 100), { trusted: true })
      expect(await store.hasDigests(digests)).toEqual(blocks.map((_, i) => i < 100))
      expect(calls.gets).toBe(0)
      await store.commit()
      const before = calls.gets
      expect(await store.hasDigests(digests)).toEqual(blocks.map((_, i) => i < 100))
      expect(calls.gets).toBeGreaterThan(before)
    } finally {
      await store.close()
    }
    // Reopened, the index holds blocks: they are looked up there.
    store = await Blockstore.open(path)
    try {
      const calls = counted(store)
      expect(await store.hasDigests(digests)).toEqual(blocks.map((_, i) => i < 100))
      expect(calls.gets).toBeGreaterThan(0)
      expect((await store.getMany(blocks.slice(0, 100).map(b => b.cid))).every((bytes, i) => Buffer.from(bytes).equals(Buffer.from(blocks[i]!.bytes)))).toBe(true)
    } finally {
      await store.close()
    }
  })
})
