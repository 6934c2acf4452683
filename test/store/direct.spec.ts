/**
 * Appends nobody reads back soon are written direct (O_DIRECT, src/store/direct.ts): staged in
 * aligned buffers, written a whole 4 KiB unit at a time, the unit a write ends in written again by
 * the next. A read of what the store just appended sends its next appends through the page cache
 * again. Tested on the real file system of the test directory (ext4 here and in CI: it takes direct
 * writes), byte for byte, before and after a reopen.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { closeSync, openSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { DirectWrites, STAGE_BYTES, stagingBuffers } from '../../src/store/direct.js'
import { packName } from '../../src/store/packs.js'
import { rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import { countReads } from '../helpers/store.js'
import type { Block } from '../../src/store/interface.js'

const KiB = 1024

/** Sizes that are no multiple of anything: records straddle units and buffers. */
function blocks (seed: string, count: number, size: number): Block[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = pseudoRandom(`${seed}-${i}`, size + 7 * i)
    return { cid: rawCid(bytes), bytes }
  })
}

interface WriterView {
  directNext: boolean
  size: number
  hotUntil: number
  id: number
  landed: number
  direct?: { direct: boolean } | null
}

const writerOf = (store: Blockstore): WriterView => (store as unknown as { writer: WriterView }).writer

async function expectStored (store: Blockstore, set: Block[]): Promise<void> {
  const got = await store.getMany(set.map(b => b.cid))
  got.forEach((bytes, i) => { expect(Buffer.compare(bytes, set[i]!.bytes)).toBe(0) })
}

describe('Blockstore: direct writes', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('land byte for byte across units and staging buffers, many puts in flight, and the pack ends at its last record', async () => {
    const path = join(dir, 'a')
    // ~12 MiB in 8 puts started together: more than both staging buffers hold, so records wait
    // for a buffer, and writes follow each other while more are copied.
    const sets = Array.from({ length: 8 }, (_, k) => blocks(`d-many-${k}`, 6, 250 * KiB + 3))
    expect(sets.flat().reduce((n, b) => n + b.bytes.length, 0)).toBeGreaterThan(2 * STAGE_BYTES)
    let store = await Blockstore.open(path)
    let pack: number
    try {
      const writer = writerOf(store)
      expect(writer.directNext).toBe(true)
      const results = await Promise.all(sets.map(async set => await store.putMany(set, { trusted: true })))
      results.forEach((r, k) => { expect(r.stored).toBe(sets[k]!.length) })
      expect(writer.direct?.direct).toBe(true)
      // Landed, not committed: read back from the pack (on the threadpool: not in the page cache).
      for (const set of sets) await expectStored(store, set)
      await store.commit()
      pack = writer.id
      // A unit-aligned tail past the last record until the pack is closed.
      expect(statSync(join(path, 'packs', packName(pack))).size % 4096).toBe(0)
    } finally {
      await store.close()
    }
    expect(statSync(join(path, 'packs', packName(pack))).size).toBe(writerOf(store).landed)
    store = await Blockstore.open(path)
    try {
      for (const set of sets) await expectStored(store, set)
      // Appends after the reopen start inside the last unit written before it.
      const more = blocks('d-many-after', 5, 33 * KiB)
      await store.putMany(more, { trusted: true })
      await store.commit()
      for (const set of [...sets, more]) await expectStored(store, set)
    } finally {
      await store.close()
    }
  })

  it('a read of what it just appended sends the next appends through the page cache, and direct again later', async () => {
    const path = join(dir, 'b')
    const first = blocks('d-hot-1', 12, 20 * KiB + 1)
    const second = blocks('d-hot-2', 12, 20 * KiB + 3)
    const third = blocks('d-hot-3', 12, 20 * KiB + 5)
    let store = await Blockstore.open(path)
    try {
      const writer = writerOf(store)
      await store.putMany(first, { trusted: true })
      // Written direct: not in the page cache, so read on the threadpool.
      let counts = countReads(store)
      expect((await store.readMany(first.map(b => b.cid))).every((b, i) => Buffer.compare(b!, first[i]!.bytes) === 0)).toBe(true)
      expect(counts.pool).toBeGreaterThan(0)
      expect(counts.now).toBe(0)
      // That read said its appends are wanted: the next go through the page cache, and are read from it.
      expect(writer.directNext).toBe(false)
      await store.putMany(second, { trusted: true })
      counts = countReads(store)
      expect((await store.readMany(second.map(b => b.cid))).every((b, i) => Buffer.compare(b!, second[i]!.bytes) === 0)).toBe(true)
      expect(counts.now).toBeGreaterThan(0)
      expect(counts.pool).toBe(0)
      // Nobody read for a while (HOT_MS): direct again, starting inside a unit written through the cache.
      writer.hotUntil = 0
      expect(writer.directNext).toBe(true)
      await store.putMany(third, { trusted: true })
      for (const set of [first, second, third]) await expectStored(store, set)
      await store.commit()
    } finally {
      await store.close()
    }
    store = await Blockstore.open(path)
    try {
      for (const set of [first, second, third]) await expectStored(store, set)
    } finally {
      await store.close()
    }
  })

  it('a read of a block whose direct write is still in flight waits for it, and gets the right bytes', async () => {
    const store = await Blockstore.open(join(dir, 'e'))
    try {
      const set = blocks('d-inflight', 8, 24 * KiB)
      const writer = writerOf(store)
      expect(writer.directNext).toBe(true)
      // The direct write is handed to the kernel 300 ms late (a slow disk, a busy threadpool).
      const direct = writer.direct as unknown as { send: (...a: unknown[]) => void }
      const send = direct.send.bind(direct)
      direct.send = (...a: unknown[]) => { setTimeout(() => { send(...a) }, 300) }
      const put = store.putMany(set, { trusted: true })
      // The records are pending (appended, their write issued) before their bytes are in the pack.
      while (writer.size === 0) await new Promise(resolve => setImmediate(resolve))
      expect(writer.landed).toBe(0)
      const got = await store.getMany(set.map(b => b.cid))
      got.forEach((bytes, i) => { expect(Buffer.compare(bytes, set[i]!.bytes)).toBe(0) })
      await put
      const more = blocks('d-inflight-2', 4, 24 * KiB)
      const put2 = store.putMany(more, { trusted: true })
      while (writer.size === writer.landed) await new Promise(resolve => setImmediate(resolve))
      expect(Buffer.compare(await store.get(more[2]!.cid), more[2]!.bytes)).toBe(0)
      await put2
    } finally {
      await store.close()
    }
  })

  it('a file that refuses a direct write after all gets the same bytes through the page cache, and plain writes after', async () => {
    const path = join(dir, 'c')
    const first = blocks('d-refused-1', 10, 40 * KiB)
    const second = blocks('d-refused-2', 10, 40 * KiB)
    let store = await Blockstore.open(path)
    try {
      // Staging buffers one byte off any alignment: the kernel refuses the direct write (EINVAL).
      const misaligned = (): Buffer => Buffer.allocUnsafeSlow(STAGE_BYTES + 4096).subarray(1, 1 + STAGE_BYTES)
      ;(store.packs as unknown as { staging: [Buffer, Buffer] }).staging = [misaligned(), misaligned()]
      const writer = writerOf(store)
      expect(writer.directNext).toBe(true)
      expect(await store.putMany(first, { trusted: true })).toEqual({ stored: 10, bytes: first.reduce((n, b) => n + b.bytes.length, 0) })
      expect(writer.direct?.direct).toBe(false)
      expect(writer.directNext).toBe(false)
      await store.putMany(second, { trusted: true })
      await store.commit()
    } finally {
      await store.close()
    }
    store = await Blockstore.open(path)
    try {
      for (const set of [first, second]) await expectStored(store, set)
    } finally {
      await store.close()
    }
  })

  it('COLLECTIVE_DIRECT_WRITES=0 (or directWrites: false) keeps every write in the page cache', async () => {
    const store = await Blockstore.open(join(dir, 'd'), { directWrites: false })
    try {
      const set = blocks('d-off', 8, 30 * KiB)
      expect(writerOf(store).directNext).toBe(false)
      await store.putMany(set, { trusted: true })
      expect(writerOf(store).direct).toBeUndefined()
      const counts = countReads(store)
      await store.readMany(set.map(b => b.cid))
      expect(counts.now).toBeGreaterThan(0)
    } finally {
      await store.close()
    }
  })

  it("take the pieces they are given: the caller's list is empty at once, and the bytes land all the same", async () => {
    const path = join(dir, 'handed-over')
    const buffers = stagingBuffers(dir)
    expect(buffers).toBeDefined()
    const fd = openSync(path, 'w+')
    const writes = new DirectWrites(path, fd, buffers!)
    try {
      const data = pseudoRandom('handed-over', 3 * STAGE_BYTES + 12345)
      const pieces = [data.subarray(0, 100), data.subarray(100, 2 * STAGE_BYTES), data.subarray(2 * STAGE_BYTES)]
      const landed = writes.write(pieces, 0)
      // Nothing of the caller's holds the pieces while they are written.
      expect(pieces).toHaveLength(0)
      await landed
      expect(Buffer.compare(readFileSync(path).subarray(0, data.length), data)).toBe(0)
    } finally {
      writes.close()
      closeSync(fd)
    }
  })

  it("a put that hands its blocks over empties the caller's list, and stores every block", async () => {
    const store = await Blockstore.open(join(dir, 'handover-put'))
    try {
      const set = blocks('handover', 12, 100 * KiB)
      const kept = [...set]
      const given = [...set]
      expect(await store.putMany(given, { trusted: true, fresh: true, handOver: true })).toEqual({ stored: 12, bytes: kept.reduce((n, b) => n + b.bytes.length, 0) })
      expect(given).toHaveLength(0)
      // Without handOver the list is the caller's as before.
      const again = blocks('not-handed', 3, 10 * KiB)
      await store.putMany(again, { trusted: true, fresh: true })
      expect(again).toHaveLength(3)
      await expectStored(store, [...kept, ...again])
    } finally {
      await store.close()
    }
  })
})
