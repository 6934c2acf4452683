import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { readFile, stat, writeFile, open } from 'node:fs/promises'
import { join } from 'node:path'
import { openStore, fsck, collectGarbage, type Store } from '../../src/store/index.js'
import { importImage, exportImage, diff, exportCar, importCar, DiskReader, type ChunkerParams } from '../../src/dag/index.js'
import { pseudoRandom, writeImage } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import type { CID } from 'multiformats/cid'

const FIXED: ChunkerParams = { kind: 'fixed', size: 65536 }
const CDC: ChunkerParams = { kind: 'fastcdc', size: 16384 }

describe('store round trips', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir())
    store = await openStore(join(dir, 'data'))
  })
  afterAll(async () => {
    await store.close()
    await cleanup()
  })

  const put = async (path: string, chunker: ChunkerParams, s = store): Promise<CID> =>
    (await importImage(s.blocks, path, { chunker, tmpDir: dir })).root

  const images: Array<[string, number, Array<[number, number, string]>]> = [
    ['one-byte', 1, [[0, 1, 'a']]],
    ['one-zero-byte', 1, []],
    ['unaligned', 5 * 1024 * 1024 + 333, [[0, 5 * 1024 * 1024 + 333, 'u']]],
    ['sparse', 64 * 1024 * 1024, [[4096, 70_000, 's1'], [10_000_000, 2_000_000, 's2'], [64 * 1024 * 1024 - 1000, 1000, 's3']]],
    ['all-zero', 32 * 1024 * 1024, []],
    ['data-then-tail-zeros', 3 * 1024 * 1024 + 17, [[0, 1_000_000, 't']]]
  ]

  for (const [name, size, extents] of images) {
    for (const chunker of [FIXED, CDC]) {
      it(`${name} (${chunker.kind}) exports byte-identical and sparse`, async () => {
        const path = join(dir, `${name}.img`)
        await writeImage(path, size, extents)
        const root = await put(path, chunker)
        const out = join(dir, `${name}-${chunker.kind}.out`)
        const result = await exportImage(store.blocks, root, out)
        expect(result.size).toBe(size)
        expect(Buffer.compare(await readFile(out), await readFile(path))).toBe(0)
        const dataBytes = extents.reduce((n, [, l]) => n + l, 0)
        // Holes are not written: the export allocates about as much as the data (plus chunk slack).
        expect((await stat(out)).blocks * 512).toBeLessThanOrEqual(dataBytes + 4 * 65536 + 8192)
      })
    }
  }

  it('the same image gives the same root in two stores, and the root changes with the chunker', async () => {
    const path = join(dir, 'det.img')
    await writeImage(path, 20 * 1024 * 1024, [[0, 3_000_000, 'd1'], [9_000_000, 4_000_000, 'd2']])
    const other = await openStore(join(dir, 'other'))
    try {
      for (const chunker of [FIXED, CDC]) {
        expect((await put(path, chunker, other)).toString()).toBe((await put(path, chunker)).toString())
      }
      expect((await put(path, FIXED)).toString()).not.toBe((await put(path, CDC)).toString())
    } finally {
      await other.close()
    }
  })

  it('cat-style reads return any byte range through the offset index', async () => {
    const path = join(dir, 'ranges.img')
    await writeImage(path, 9 * 1024 * 1024 + 5, [[100, 4_000_000, 'r1'], [6_000_000, 3_000_000, 'r2']])
    const bytes = await readFile(path)
    for (const chunker of [FIXED, CDC]) {
      const reader = await DiskReader.open(await put(path, chunker), store.blocks)
      for (const [offset, length] of [[0, 1], [99, 2], [65535, 3], [4_000_050, 70_000], [5_000_000, 2_000_000], [bytes.length - 3, 10]]) {
        const got = await reader.read(offset!, length!)
        expect(Buffer.compare(got, bytes.subarray(offset, offset! + length!))).toBe(0)
      }
    }
  })

  it('diff lists exactly the blocks a store holding only <old> lacks', async () => {
    const v1 = join(dir, 'v1.img')
    const v2 = join(dir, 'v2.img')
    await writeImage(v1, 48 * 1024 * 1024, [[0, 20_000_000, 'base'], [30_000_000, 5_000_000, 'base2']])
    await writeFile(v2, await readFile(v1))
    const fd = await open(v2, 'r+')
    await fd.write(pseudoRandom('patch1', 300_000), 0, 300_000, 1_234_567)
    await fd.write(pseudoRandom('patch2', 2_000_000), 0, 2_000_000, 40_000_000)
    await fd.close()
    for (const chunker of [FIXED, CDC]) {
      const { dir: d, cleanup: c } = await tempDir()
      const only1 = await openStore(join(d, 'a'))
      const both = await openStore(join(d, 'b'))
      try {
        const r1 = await put(v1, chunker, only1)
        await put(v1, chunker, both)
        const r2 = await put(v2, chunker, both)
        const result = await diff(both.blocks, r1, r2)
        // Ground truth: every block of v2's DAG that the v1-only store does not have.
        const missing = new Set<string>()
        const reader = await DiskReader.open(r2, both.blocks)
        if (!await only1.blocks.has(r2)) missing.add(r2.toString())
        for await (const leaf of reader.walk({ onNode: ({ cid }) => { void cid } })) { void leaf }
        const all: CID[] = [r2]
        for await (const leaf of reader.walk({ onNode: ({ cid }) => { all.push(cid) } })) if (leaf.cid != null) all.push(leaf.cid)
        const present = await only1.blocks.hasMany(all)
        all.forEach((cid, i) => { if (!present[i]!) missing.add(cid.toString()) })
        expect(new Set(result.list.map(b => b.cid.toString()))).toEqual(missing)
        expect(result.bytes).toBeGreaterThanOrEqual(2_300_000)
        expect(result.bytes).toBeLessThan(2_300_000 + 6 * 65536 + 200_000)
        expect(result.wireBytes).toBeGreaterThan(0)
      } finally {
        await only1.close()
        await both.close()
        await c()
      }
    }
  })

  it('fsck finds a flipped byte, drops the block, and reports the root incomplete', async () => {
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      const path = join(d, 'flip.img')
      await writeImage(path, 4 * 1024 * 1024, [[0, 4 * 1024 * 1024, 'flip']])
      const root = await put(path, CDC, s)
      await s.pins.set({ name: 'flip', root: root.toString(), size: 4 * 1024 * 1024, created: '' })
      expect((await fsck(s.blocks, s.pins)).corrupt).toEqual([])
      const pack = s.blocks.packs.path(s.blocks.activePack)
      const fd = await open(pack, 'r+')
      const one = Buffer.alloc(1)
      await fd.read(one, 0, 1, 1_000_000)
      one[0] ^= 0x40
      await fd.write(one, 0, 1, 1_000_000)
      await fd.close()
      await expect(exportImage(s.blocks, root, join(d, 'out.img'))).rejects.toMatchObject({ code: 'ERR_HASH_MISMATCH' })
      const result = await fsck(s.blocks, s.pins)
      expect(result.corrupt).toHaveLength(1)
      expect(result.incomplete).toEqual([{ name: 'flip', missing: result.corrupt[0] }])
      // Re-importing the image repairs the store.
      await put(path, CDC, s)
      expect(await fsck(s.blocks, s.pins)).toMatchObject({ corrupt: [], incomplete: [] })
    } finally {
      await s.close()
      await c()
    }
  })

  it('CAR export and import round-trip, verifying every block', async () => {
    const path = join(dir, 'car.img')
    await writeImage(path, 12 * 1024 * 1024, [[0, 5_000_000, 'car1'], [8_000_000, 1_000_000, 'car2']])
    const root = await put(path, CDC)
    const car = join(dir, 'out.car')
    const exported = await exportCar(store.blocks, root, car)
    expect(exported.blocks).toBeGreaterThan(300)
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      const imported = await importCar(s.blocks, car)
      expect(imported.root.toString()).toBe(root.toString())
      expect(imported.blocks).toBe(exported.blocks)
      await exportImage(s.blocks, root, join(d, 'back.img'))
      expect(Buffer.compare(await readFile(join(d, 'back.img')), await readFile(path))).toBe(0)
      // A corrupted CAR is refused.
      const bytes = await readFile(car)
      bytes[bytes.length - 100] ^= 1
      await writeFile(join(d, 'bad.car'), bytes)
      const s2 = await openStore(join(d, 'data2'))
      try {
        await expect(importCar(s2.blocks, join(d, 'bad.car'))).rejects.toMatchObject({ code: 'ERR_INVALID_CAR' })
        expect((await fsck(s2.blocks, s2.pins)).corrupt).toEqual([])
      } finally {
        await s2.close()
      }
    } finally {
      await s.close()
      await c()
    }
  })

  it('gc frees what no pin needs and keeps what pins need', async () => {
    const { dir: d, cleanup: c } = await tempDir()
    const s = await openStore(join(d, 'data'))
    try {
      const a = join(d, 'a.img')
      const b = join(d, 'b.img')
      await writeImage(a, 8 * 1024 * 1024, [[0, 6_000_000, 'gc-a']])
      await writeImage(b, 8 * 1024 * 1024, [[0, 3_000_000, 'gc-a'], [4_000_000, 3_000_000, 'gc-b']])
      const ra = await put(a, CDC, s)
      const rb = await put(b, CDC, s)
      await s.pins.set({ name: 'b', root: rb.toString(), size: 0, created: '' })
      const result = await collectGarbage(s.blocks, s.pins)
      expect(result.blocksRemoved).toBeGreaterThan(100)
      expect(await s.blocks.has(ra)).toBe(false)
      await exportImage(s.blocks, rb, join(d, 'b.out'))
      expect(Buffer.compare(await readFile(join(d, 'b.out')), await readFile(b))).toBe(0)
      expect(await fsck(s.blocks, s.pins)).toMatchObject({ corrupt: [], incomplete: [] })
    } finally {
      await s.close()
      await c()
    }
  })
})
