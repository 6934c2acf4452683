import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { LOCATION_BYTES, decodeLocation, encodeLocation, writeLocation } from '../../src/store/keys.js'
import { rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import type { Block } from '../../src/store/interface.js'

const MiB = 1024 * 1024

/** `count` distinct 1 MiB blocks (80 of them pass the store's 64 MiB commit mark). */
function blocks (seed: string, count: number): Block[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = pseudoRandom(`${seed}-${i}`, MiB)
    return { cid: rawCid(bytes), bytes }
  })
}

describe('Blockstore.putMany called again before the calls ahead are done', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('stores each block once: looked up before a call ahead appended it, being committed, or committed', async () => {
    const store = await Blockstore.open(join(dir, 'a'))
    try {
      const set = blocks('pm', 80)
      // All three look up before anything is appended; the first passes 64 MiB and starts a commit,
      // the commit() lands it before the third call takes the lock.
      const first = store.putMany(set, { trusted: true })
      const second = store.putMany(set, { trusted: true })
      const landed = store.commit()
      const third = store.putMany([...set, ...blocks('pm-new', 2)], { trusted: true })
      const [a, b, , c] = await Promise.all([first, second, landed, third])
      expect(a).toEqual({ stored: 80, bytes: 80 * MiB })
      expect(b).toEqual({ stored: 0, bytes: 0 })
      expect(c).toEqual({ stored: 2, bytes: 2 * MiB })
      await store.commit()
      let count = 0
      for await (const _ of store.entries()) count++
      expect(count).toBe(82)
      const got = await store.getMany(set.slice(0, 3).map(b => b.cid))
      got.forEach((bytes, i) => { expect(Buffer.from(bytes).equals(Buffer.from(set[i]!.bytes))).toBe(true) })
    } finally {
      await store.close()
    }
    // Nothing written twice: the pack holds each record once.
    const reopened = await Blockstore.open(join(dir, 'a'))
    try {
      const length = await reopened.getMeta<number>(`pack:${reopened.activePack}:length`)
      expect(length).toBeLessThan(83 * MiB)
      expect(length).toBeGreaterThan(82 * MiB)
    } finally {
      await reopened.close()
    }
  })
  it('fresh puts skip the index yet store a block once; a background commit indexes what was written before it', async () => {
    const store = await Blockstore.open(join(dir, 'b'))
    try {
      const a = blocks('fresh-a', 4)
      const b = blocks('fresh-b', 2)
      expect(await store.putMany(a, { trusted: true, fresh: true })).toEqual({ stored: 4, bytes: 4 * MiB })
      // Pending, not indexed: found in memory.
      expect(await store.putMany(a, { trusted: true, fresh: true })).toEqual({ stored: 0, bytes: 0 })
      const committed = store.commitInBackground()
      const more = store.putMany(b, { trusted: true, fresh: true })
      await committed
      expect(await more).toEqual({ stored: 2, bytes: 2 * MiB })
      // Indexed (what another open of the store would see), with the pack length that covers it.
      const indexed = new Set<string>()
      for await (const { cid } of store.entries()) indexed.add(cid.toString())
      for (const block of a) expect(indexed.has(block.cid.toString())).toBe(true)
      expect(await store.getMeta<number>(`pack:${store.activePack}:length`)).toBeGreaterThanOrEqual(4 * MiB)
      // Committed, and in the recent locations: a fresh put still finds it.
      expect(await store.putMany(a.slice(0, 1), { trusted: true, fresh: true })).toEqual({ stored: 0, bytes: 0 })
      // A block not fresh is looked up in the index as before.
      expect(await store.putMany(a.slice(1, 2), { trusted: true })).toEqual({ stored: 0, bytes: 0 })
      await store.commit()
    } finally {
      await store.close()
    }
    // Another open reads every block through the index entries the commits wrote.
    const reopened = await Blockstore.open(join(dir, 'b'))
    try {
      expect(reopened.recovered.blocks).toBe(0)
      const all = [...blocks('fresh-a', 4), ...blocks('fresh-b', 2)]
      const got = await reopened.getMany(all.map(x => x.cid))
      got.forEach((bytes, i) => { expect(Buffer.from(bytes).equals(Buffer.from(all[i]!.bytes))).toBe(true) })
    } finally {
      await reopened.close()
    }
  })

  it('index values keep a location exactly, offsets past 4 GiB included', () => {
    for (const entry of [{ pack: 0, offset: 0, length: 0, codec: 0x55 }, { pack: 2 ** 32 - 1, offset: 5e9 + 7, length: 1 << 20, codec: 0x71 }]) {
      expect(decodeLocation(encodeLocation(entry))).toEqual(entry)
      const out = Buffer.alloc(LOCATION_BYTES + 3)
      writeLocation(out, entry)
      expect(decodeLocation(out.subarray(0, LOCATION_BYTES))).toEqual(entry)
      expect(out.subarray(0, LOCATION_BYTES).equals(Buffer.from(encodeLocation(entry)))).toBe(true)
    }
  })
})
