/**
 * The store's writes are pipelined: a put writes its records while earlier puts' writes are in
 * flight, and a commit syncs the disk without holding up later puts. Tested against the real file
 * system, and a real full disk (a 6 MiB tmpfs).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { Blockstore } from '../../src/store/blockstore.js'
import { rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import { mountTmpfs } from '../helpers/tmpfs.js'
import type { Block } from '../../src/store/interface.js'

const KiB = 1024
const MiB = 1024 * KiB

function blocks (seed: string, count: number, size: number): Block[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = pseudoRandom(`${seed}-${i}`, size)
    return { cid: rawCid(bytes), bytes }
  })
}

// A refusal skips the full-disk case with the real reason (the specs run as root).
const tmpfs = mountTmpfs('6m', 'cp-writes-mnt-')
const mountPoint = tmpfs.path
const mountError = tmpfs.error
const unmount = tmpfs.unmount
if (mountError != null) console.warn(`writes.spec: full-disk case skipped: cannot mount a tmpfs (${mountError})`)

describe('Blockstore writes', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => {
    await cleanup()
    unmount()
  })

  it('a put does not wait for a commit in flight', async () => {
    const store = await Blockstore.open(join(dir, 'a'))
    try {
      // 48 MiB written, not committed: the commit syncs all of it.
      await store.putMany(blocks('w-big', 48, MiB), { trusted: true })
      const order: string[] = []
      const committed = store.commitInBackground().then(() => { order.push('commit') })
      const put = store.putMany(blocks('w-small', 1, 16 * KiB), { trusted: true }).then(r => { order.push('put'); return r })
      expect(await put).toEqual({ stored: 1, bytes: 16 * KiB })
      await committed
      // Before, the commit held the store's lock until it landed, and the put waited for the sync.
      expect(order).toEqual(['put', 'commit'])
    } finally {
      await store.close()
    }
  })

  it('writes go to the threadpool after a slow synchronous one, and both kinds land byte for byte', async () => {
    const path = join(dir, 'sync-async')
    const first = blocks('w-sync', 24, 64 * KiB)
    const second = blocks('w-async', 24, 64 * KiB)
    // Writes through the page cache (direct writes are asynchronous anyway: direct.spec.ts).
    let store = await Blockstore.open(path, { directWrites: false })
    try {
      const writer = (store as unknown as { writer: { syncWrites: boolean, slowWriteMs: number } }).writer
      expect(writer.syncWrites).toBe(true)
      // Every synchronous write now counts as slow: the first put's write is done at once, and
      // turns the writes after it to the threadpool.
      writer.slowWriteMs = -1
      await store.putMany(first, { trusted: true })
      expect(writer.syncWrites).toBe(false)
      await store.putMany(second, { trusted: true })
      await store.commit()
    } finally {
      await store.close()
    }
    store = await Blockstore.open(path)
    try {
      const all = [...first, ...second]
      const read = await store.getMany(all.map(b => b.cid))
      read.forEach((bytes, i) => { expect(Buffer.compare(bytes, all[i]!.bytes)).toBe(0) })
    } finally {
      await store.close()
    }
  })

  it.skipIf(mountError != null)('on a full disk, puts past the failed write fail, and nothing indexed points past what landed', async () => {
    const storeDir = join(mountPoint, 'store')
    const store = await Blockstore.open(storeDir)
    // One put lands first (it fits). Then 32 puts of 256 KiB together: 8 MiB, their writes in
    // flight together, on 6 MiB. The thread pool may land them out of order, so which of them fail
    // is up to it: a write far into the pack can take the space an earlier one needed.
    const first = blocks('w-full-first', 16, 16 * KiB)
    expect(await store.putMany(first, { trusted: true })).toEqual({ stored: 16, bytes: 256 * KiB })
    const puts = Array.from({ length: 32 }, (_, i) => blocks(`w-full-${i}`, 16, 16 * KiB))
    const settled = await Promise.allSettled(puts.map(async set => await store.putMany(set, { trusted: true })))
    const failed = settled.filter(s => s.status === 'rejected')
    expect(failed.length).toBeGreaterThan(0)
    const stored = [first, ...puts.filter((_, i) => settled[i]!.status === 'fulfilled')]
    for (const s of failed) expect((s as PromiseRejectedResult).reason?.code).toBe('ERR_NO_SPACE')
    // What a put reported stored reads back (not yet committed).
    for (const set of stored) {
      const got = await store.getMany(set.map(b => b.cid))
      got.forEach((bytes, i) => { expect(Buffer.from(bytes).equals(Buffer.from(set[i]!.bytes))).toBe(true) })
    }
    // The index may not fit either; whatever it holds afterwards must be right.
    const commit = await store.commit().then(() => undefined, (err: unknown) => err)
    await store.close().catch(() => {})
    const reopened = await Blockstore.open(storeDir)
    try {
      const indexed = new Set<string>()
      for await (const { cid } of reopened.entries()) {
        indexed.add(cid.toString())
        // Verified on read: an entry past the pack's committed end would fail here.
        await reopened.get(cid)
      }
      if (commit == null) for (const set of stored) for (const b of set) expect(indexed.has(b.cid.toString())).toBe(true)
      else expect((commit as { code?: string }).code).toBe('ERR_NO_SPACE')
      for (const [i, s] of settled.entries()) {
        if (s.status === 'rejected') for (const b of puts[i]!) expect(indexed.has(b.cid.toString())).toBe(false)
      }
    } finally {
      await reopened.close()
    }
  })
})
