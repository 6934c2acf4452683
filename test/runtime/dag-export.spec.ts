import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openStore, type Store } from '../../src/store/index.js'
import { importImage, DiskReader } from '../../src/dag/index.js'
import { blockKey } from '../../src/store/keys.js'
import { DagExport } from '../../src/runtime/nbd/index.js'
import { LazyBlocks, type BlockFetcher } from '../../src/runtime/lazy-blocks.js'
import { writeImage } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import type { CID } from 'multiformats/cid'
import type { ExportBlocks } from '../../src/runtime/disk-exports.js'

const MiB = 1024 * 1024
// Fixed 4 KiB chunks: a level-1 node spans 512 KiB and a level-2 node 64 MiB, so 70 MiB needs a
// root of height 3; most of it is holes (at leaf level and whole nodes).
const SIZE = 70 * MiB + 1234
const EXTENTS: Array<[number, number, string]> = [
  [0, 300_000, 'a'], [2 * MiB - 5000, MiB + 10_000, 'b'], [64 * MiB - 100_000, 200_000, 'c'], [SIZE - 70_000, 70_000, 'd']
]

/** Deterministic ranges covering leaf edges, holes, node edges and the end of the disk. */
function ranges (): Array<[number, number]> {
  const out: Array<[number, number]> = [[0, 1], [0, SIZE], [4095, 2], [4096, 4096], [SIZE - 1, 1], [SIZE - 70_001, 70_001],
    [512 * 1024 - 3, 10], [64 * MiB - 1, 2], [2 * MiB - 6000, 3 * MiB], [5 * MiB, 7 * MiB]]
  let x = 12345
  const next = (n: number): number => { x = (x * 1103515245 + 12345) % 2 ** 31; return x % n }
  for (let i = 0; i < 200; i++) {
    const [base] = EXTENTS[next(EXTENTS.length)]!
    const offset = Math.max(0, Math.min(SIZE - 1, base - 8192 + next(400_000)))
    out.push([offset, 1 + next(Math.min(300_000, SIZE - offset))])
  }
  return out
}

describe('DagExport reads', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let image: Buffer
  let root: CID

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-dagexport-'))
    store = await openStore(join(dir, 'data'))
    const path = join(dir, 'disk.img')
    await writeImage(path, SIZE, EXTENTS)
    image = await readFile(path)
    root = (await importImage(store.blocks, path, { chunker: { kind: 'fixed', size: 4096 }, tmpDir: dir })).root
    expect((await DiskReader.open(root, store.blocks)).root.height).toBe(3)
  })
  afterAll(async () => {
    await store?.close()
    await cleanup()
  })

  const check = async (exp: DagExport): Promise<void> => {
    for (const [offset, length] of ranges()) {
      const got = await exp.read(offset, length)
      expect(Buffer.compare(Buffer.from(got), image.subarray(offset, offset + length)), `[${offset}, +${length})`).toBe(0)
      const into = Buffer.alloc(length, 0xee)
      expect(await exp.read(offset, length, { into })).toBe(into)
      expect(Buffer.compare(into, image.subarray(offset, offset + length)), `into [${offset}, +${length})`).toBe(0)
    }
  }

  it('any range reads back byte-identical from the store (twice: located, then verified)', async () => {
    const exp = await DagExport.open(root, store.blocks)
    await check(exp)
    await check(exp)
  })

  it('any range reads back byte-identical through blocks that are not a store', async () => {
    const blocks: ExportBlocks = { get: async (cid, o) => await store.blocks.get(cid, o), has: async cid => await store.blocks.has(cid) }
    await check(await DagExport.open(root, blocks))
  })

  it('extents cover the range, holes only where the image is zeros', async () => {
    const exp = await DagExport.open(root, store.blocks)
    for (const [offset, length] of [[0, SIZE], [3, 5 * MiB], [63 * MiB, 7 * MiB + 1234]] as Array<[number, number]>) {
      const extents = await exp.extents(offset, length)
      expect(extents.reduce((n, e) => n + e.length, 0)).toBe(length)
      let pos = offset
      for (const e of extents) {
        if (e.zero) expect(image.subarray(pos, pos + e.length).every(b => b === 0)).toBe(true)
        pos += e.length
      }
      // Adjacent extents differ (merged), and the data is in the data extents.
      for (let i = 1; i < extents.length; i++) expect(extents[i]!.zero).not.toBe(extents[i - 1]!.zero)
      expect(extents.filter(e => !e.zero).reduce((n, e) => n + e.length, 0)).toBeGreaterThan(0)
    }
  })

  it('a corrupt leaf fails the reads that need it, and only those', async () => {
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      const path = join(d, 'flip.img')
      await writeImage(path, 4 * MiB, [[0, 4 * MiB, 'flip']])
      const r = (await importImage(s.blocks, path, { chunker: { kind: 'fixed', size: 65536 }, tmpDir: d })).root
      const exp = await DagExport.open(r, s.blocks)
      const bytes = await readFile(path)
      // Flip a byte of the leaf holding image offset 1 MiB + 100 (found through the index).
      const reader = await DiskReader.open(r, s.blocks)
      let leaf: CID | undefined
      for await (const l of reader.leavesIn(MiB + 100, 1)) leaf = l.cid!
      const [loc] = await s.blocks.locateMany([leaf!.multihash.digest])
      const fd = await open(s.blocks.packs.path(loc!.pack), 'r+')
      const one = Buffer.alloc(1)
      await fd.read(one, 0, 1, loc!.offset + 7)
      one[0] ^= 0x01
      await fd.write(one, 0, 1, loc!.offset + 7)
      await fd.close()
      await expect(exp.read(MiB + 100, 10)).rejects.toMatchObject({ code: 'ERR_HASH_MISMATCH' })
      await expect(exp.read(MiB - 10, 200_000)).rejects.toMatchObject({ code: 'ERR_HASH_MISMATCH' })
      expect(Buffer.compare(Buffer.from(await exp.read(0, MiB)), bytes.subarray(0, MiB))).toBe(0)
      expect(Buffer.compare(Buffer.from(await exp.read(MiB + 65536, MiB)), bytes.subarray(MiB + 65536, 2 * MiB + 65536))).toBe(0)
    } finally {
      await s.close()
      await c()
    }
  })

  it('locations are forgotten when the store drops blocks (fsck, gc), and found again once stored', async () => {
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      const path = join(d, 'gen.img')
      await writeImage(path, 2 * MiB, [[0, 2 * MiB, 'gen']])
      const bytes = await readFile(path)
      const r = (await importImage(s.blocks, path, { chunker: { kind: 'fixed', size: 65536 }, tmpDir: d })).root
      const exp = await DagExport.open(r, s.blocks)
      expect(Buffer.compare(Buffer.from(await exp.read(0, 2 * MiB)), bytes)).toBe(0)
      const leaves: CID[] = []
      for await (const l of (await DiskReader.open(r, s.blocks)).leavesIn(0, 2 * MiB)) leaves.push(l.cid!)
      const generation = s.blocks.readGeneration
      await s.blocks.deleteMany(leaves.map(blockKey))
      expect(s.blocks.readGeneration).not.toBe(generation)
      await expect(exp.read(100, 10)).rejects.toMatchObject({ code: 'ERR_BLOCK_MISSING' })
      await importImage(s.blocks, path, { chunker: { kind: 'fixed', size: 65536 }, tmpDir: d })
      expect(Buffer.compare(Buffer.from(await exp.read(0, 2 * MiB)), bytes)).toBe(0)
    } finally {
      await s.close()
      await c()
    }
  })

  it('leaves the store lacks come through the fetcher once, then from the store', async () => {
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      // The local store holds the DAG's nodes but none of its leaves.
      const reader = await DiskReader.open(root, store.blocks)
      await s.blocks.put(root, await store.blocks.get(root))
      for await (const leaf of reader.walk({ onNode: n => { void s.blocks.put(n.cid, n.bytes) } })) void leaf
      await s.blocks.commit()
      const fetched: CID[] = []
      const fetcher: BlockFetcher = {
        fetch: async (_root, cids) => {
          fetched.push(...cids)
          const blocks = await store.blocks.getMany(cids)
          await s.blocks.putMany(cids.map((cid, i) => ({ cid, bytes: blocks[i]! })))
          return blocks
        },
        pull: async () => {}
      }
      const exp = await DagExport.open(root, new LazyBlocks(s.blocks, root, fetcher))
      const [offset, length] = [2 * MiB - 6000, 100_000]
      expect(Buffer.compare(Buffer.from(await exp.read(offset, length)), image.subarray(offset, offset + length))).toBe(0)
      const once = fetched.length
      expect(once).toBeGreaterThan(20)
      expect(Buffer.compare(Buffer.from(await exp.read(offset, length)), image.subarray(offset, offset + length))).toBe(0)
      expect(fetched.length).toBe(once)
    } finally {
      await s.close()
      await c()
    }
  })
})

describe('PackFiles.readv', () => {
  it('fills buffers back to back, across more than IOV_MAX of them and short at the end; remove waits for reads in flight', async () => {
    const { dir, cleanup } = await tempDir()
    const s = await openStore(join(dir, 'data'))
    try {
      const path = join(dir, 'v.img')
      await writeImage(path, MiB, [[0, MiB, 'v']])
      await importImage(s.blocks, path, { chunker: { kind: 'fixed', size: 65536 }, tmpDir: dir })
      await s.blocks.commit()
      const pack = await readFile(s.blocks.packs.path(s.blocks.activePack))
      const buffers = Array.from({ length: 1500 }, (_, i) => Buffer.alloc(1 + (i % 7)))
      const total = buffers.reduce((n, b) => n + b.length, 0)
      expect(await s.blocks.packs.readv(s.blocks.activePack, 10, buffers)).toBe(total)
      expect(Buffer.compare(Buffer.concat(buffers), pack.subarray(10, 10 + total))).toBe(0)
      const tail = [Buffer.alloc(100), Buffer.alloc(100)]
      expect(await s.blocks.packs.readv(s.blocks.activePack, pack.length - 150, tail)).toBe(150)
      // Synchronous reads of an open pack, and removal waiting for reads in flight.
      const now = [Buffer.alloc(5000)]
      expect(s.blocks.packs.readvNow(s.blocks.activePack, 3, now)).toBe(5000)
      expect(Buffer.compare(now[0]!, pack.subarray(3, 5003))).toBe(0)
      const generation = s.blocks.readGeneration
      const inflight = Array.from({ length: 8 }, (_, i) => {
        const b = Buffer.alloc(65536)
        return s.blocks.packs.readv(s.blocks.activePack, i * 1000, [b]).then(n => ({ n, b, i }))
      })
      const removed = s.blocks.packs.remove(s.blocks.activePack)
      expect(s.blocks.readGeneration).not.toBe(generation)
      expect(s.blocks.packs.readvNow(s.blocks.activePack, 0, [Buffer.alloc(1)])).toBeUndefined()
      for (const { n, b, i } of await Promise.all(inflight)) {
        expect(n).toBe(65536)
        expect(Buffer.compare(b, pack.subarray(i * 1000, i * 1000 + 65536))).toBe(0)
      }
      await removed
    } finally {
      await s.close()
      await cleanup()
    }
  })
})
