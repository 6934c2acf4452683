import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { blockKey } from '../../src/store/keys.js'
import { rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import type { CID } from 'multiformats/cid'

/**
 * The store remembers locations of blocks it committed or looked up, so serving the same blocks
 * again skips LevelDB. A remembered location must never outlive its index entry: blocks dropped
 * (fsck, gc) are gone for readMany/locateMany at once, and a block stored again is found again.
 */
function blocks (seed: string, count: number, size: (i: number) => number): Array<{ cid: CID, bytes: Uint8Array }> {
  return Array.from({ length: count }, (_, i) => {
    const bytes = pseudoRandom(`${seed}-${i}`, size(i))
    return { cid: rawCid(bytes), bytes }
  })
}

/** Stores and commits `set`, then reads it back twice (the second time from remembered locations). */
async function storeAndServeTwice (store: Blockstore, set: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> {
  await store.putMany(set, { trusted: true })
  await store.commit()
  for (let round = 0; round < 2; round++) {
    const got = await store.readMany(set.map(b => b.cid))
    got.forEach((bytes, i) => { expect(Buffer.from(bytes!).equals(Buffer.from(set[i]!.bytes))).toBe(true) })
  }
}

describe('Blockstore: remembered locations', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('are forgotten when index entries are deleted, and learnt again when the blocks come back', async () => {
    const store = await Blockstore.open(join(dir, 'a'))
    try {
      const set = blocks('loc', 40, () => 16 * 1024)
      // Served twice: the second read comes from remembered locations.
      await storeAndServeTwice(store, set)
      // Half of them dropped from the index (what fsck and gc do).
      const dropped = set.slice(0, 20)
      await store.deleteMany(dropped.map(b => blockKey(b.cid)))
      const after = await store.readMany(set.map(b => b.cid))
      after.forEach((bytes, i) => { expect(bytes == null).toBe(i < 20) })
      const located = await store.locateMany(set.map(b => b.cid.multihash.digest))
      located.forEach((loc, i) => { expect(loc == null).toBe(i < 20) })
      expect(await store.hasMany(set.map(b => b.cid))).toEqual(set.map((_, i) => i >= 20))
      // Stored again (putMany must not think they are still there).
      const again = await store.putMany(dropped, { trusted: true })
      expect(again.stored).toBe(20)
      await store.commit()
      const back = await store.readMany(set.map(b => b.cid))
      back.forEach((bytes, i) => { expect(Buffer.from(bytes!).equals(Buffer.from(set[i]!.bytes))).toBe(true) })
    } finally {
      await store.close()
    }
  })

  it('stay right when more blocks pass than the cache holds (it rolls over), and are forgotten on deletes all the same', async () => {
    const store = await Blockstore.open(join(dir, 'rollover'))
    try {
      store.locationCacheSize = 64
      const set = blocks('roll', 200, i => 1024 + i)
      // The commit remembers all 200: the cache rolls over several times and keeps the newest.
      await storeAndServeTwice(store, set)
      // Within the cache's size the answer locates (and keeps) them; past it, it only looks.
      expect(await store.hasManyToServe(set.slice(150).map(b => b.cid.multihash.digest))).toEqual(Array(50).fill(true))
      expect(await store.hasManyToServe(set.map(b => b.cid.multihash.digest))).toEqual(Array(200).fill(true))
      // Dropped entries in both generations of the cache (the last 50 were just located) and out of it.
      const dropped = [...set.slice(0, 10), ...set.slice(180)]
      await store.deleteMany(dropped.map(b => blockKey(b.cid)))
      const gone = new Set(dropped.map(b => b.cid.toString()))
      const after = await store.readMany(set.map(b => b.cid))
      after.forEach((bytes, i) => { expect(bytes == null).toBe(gone.has(set[i]!.cid.toString())) })
      expect(await store.hasManyToServe(set.slice(150).map(b => b.cid.multihash.digest))).toEqual(set.slice(150).map(b => !gone.has(b.cid.toString())))
    } finally {
      await store.close()
    }
  })
})
