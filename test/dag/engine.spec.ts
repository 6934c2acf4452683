import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { blake3 } from '@napi-rs/blake-hash'
import { getChunker, type Chunk, type ChunkerParams } from '../../src/dag/chunker/index.js'
import { ChunkEngine, batchViews, hashBatch, LEAF_CID_LENGTH } from '../../src/dag/chunker/engine.js'
import { RawSource } from '../../src/dag/source/raw.js'
import { importImage } from '../../src/dag/index.js'
import { openStore, fsck } from '../../src/store/index.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'

interface Seen { offset: number, length: number, hash: string | null }

/** The reference: the async-generator chunkers, each data chunk hashed. */
async function viaGenerator (path: string, params: ChunkerParams): Promise<Seen[]> {
  const source = await RawSource.open(path)
  const out: Seen[] = []
  try {
    for await (const c of getChunker(params.kind)(source, params) as AsyncGenerator<Chunk>) {
      out.push({ offset: c.offset, length: c.length, hash: c.bytes == null ? null : blake3(c.bytes).toString('hex') })
    }
  } finally {
    await source.close()
  }
  return out
}

/** The engine fed segment by segment, each in a slot whose unused tail holds garbage. */
function viaEngine (image: Uint8Array, params: ChunkerParams, segment: number): Seen[] {
  const engine = new ChunkEngine(params, image.length, segment)
  const slot = new Uint8Array(segment + engine.lookahead)
  const out: Seen[] = []
  for (let k = 0; k < engine.segments; k++) {
    const { start, length } = engine.slot(k)
    slot.fill(0xa5)
    slot.set(image.subarray(start, start + length))
    const batch = engine.run(k, slot)
    const { offsets, lengths, cids, data } = batchViews(batch)
    for (let i = 0; i < batch.count; i++) {
      const cid = cids.subarray(i * LEAF_CID_LENGTH, (i + 1) * LEAF_CID_LENGTH)
      out.push({ offset: offsets[i]!, length: lengths[i]!, hash: data[i] === 1 ? Buffer.from(cid.subarray(4)).toString('hex') : null })
    }
  }
  return out
}

/** Data with zero runs of many lengths (some just under and over the 32 KiB hole threshold), at odd places. */
function mixedImage (size: number, seed: string): Uint8Array {
  const image = pseudoRandom(seed, size)
  const rnd = pseudoRandom(`${seed}-layout`, 4096)
  let pos = 0
  for (let i = 0; pos < size; i++) {
    const gap = ((rnd[(2 * i) % 4096]! << 8) | rnd[(2 * i + 1) % 4096]!) * 7
    pos += gap
    const lengths = [4096, 8000, 28 * 1024, 32 * 1024, 36 * 1024 + 17, 100_000, 300_000, 1_200_000]
    const len = lengths[rnd[(3 * i) % 4096]! % lengths.length]!
    // Half the runs aligned to 4 KiB, half not.
    const at = i % 2 === 0 ? pos - (pos % 4096) : pos
    image.fill(0, at, Math.min(at + len, size))
    pos = at + len
  }
  return image
}

describe('chunk engine (the import\'s worker chunker)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  const paramsList: ChunkerParams[] = [
    { kind: 'fastcdc', size: 4096 },
    { kind: 'fastcdc', size: 16384 },
    { kind: 'fastcdc', size: 65536 },
    { kind: 'fixed', size: 4096 },
    { kind: 'fixed', size: 65536 }
  ]

  it('gives the generators\' chunks and hashes, whatever the segment size', async () => {
    const images: Array<[string, Uint8Array]> = [
      ['mixed', mixedImage(6 * 1024 * 1024 + 1234, 'm1')],
      ['mixed-aligned', mixedImage(5 * 1024 * 1024, 'm2')],
      ['random', pseudoRandom('r', 3 * 1024 * 1024 + 5)],
      ['zeros', new Uint8Array(3 * 1024 * 1024 + 4096)],
      ['tiny', pseudoRandom('t', 5000)],
      ['one', Uint8Array.of(7)]
    ]
    // A long hole crossing many segments, ending just before, on and after segment boundaries.
    for (const tail of [-4096, 0, 4096, 12345]) {
      const img = pseudoRandom(`h${tail}`, 4 * 1024 * 1024)
      img.fill(0, 100_000, 2 * 1024 * 1024 + tail)
      images.push([`hole${tail}`, img])
    }
    for (const [name, image] of images) {
      const path = join(dir, `${name}.img`)
      await writeFile(path, image)
      for (const params of paramsList) {
        const want = await viaGenerator(path, params)
        for (const segment of [65536, 256 * 1024, 1024 * 1024]) {
          if (segment % params.size !== 0) continue
          const got = viaEngine(image, params, segment)
          expect(got, `${name} ${params.kind}/${params.size} segment ${segment}`).toEqual(want)
        }
      }
    }
  })

  it('a batch made without hashing, then hashed by hashBatch, is the one a hashing engine makes', () => {
    const image = mixedImage(3 * 1024 * 1024 + 99, 'hb')
    const params: ChunkerParams = { kind: 'fastcdc', size: 16384 }
    const hashing = new ChunkEngine(params, image.length, 1 << 20)
    const plain = new ChunkEngine(params, image.length, 1 << 20, { hash: false })
    for (let k = 0; k < hashing.segments; k++) {
      const { start, length } = hashing.slot(k)
      const slot = image.subarray(start, start + length)
      const want = hashing.run(k, slot)
      const got = plain.run(k, slot)
      const views = batchViews(got)
      hashBatch(views, got.count, slot, start)
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true)
    }
  })

  it('refuses segments out of order and slots too small', () => {
    const engine = new ChunkEngine({ kind: 'fastcdc', size: 16384 }, 1 << 20, 65536)
    expect(() => engine.run(1, new Uint8Array(1 << 20))).toThrow(/out of order/)
    expect(() => engine.run(0, new Uint8Array(100))).toThrow(/needs/)
  })
})

describe('import pipeline', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('gives the same root and blocks inline, with any segment size, and on a worker thread (dist)', async () => {
    const image = mixedImage(12 * 1024 * 1024 + 777, 'pipe')
    // Repeated content: the same blocks within one segment and across segments.
    image.copyWithin(9 * 1024 * 1024, 1 * 1024 * 1024, 2 * 1024 * 1024)
    const path = join(dir, 'pipe.img')
    await writeFile(path, image)
    const results = []
    for (const chunker of [{ kind: 'fastcdc', size: 16384 }, { kind: 'fixed', size: 65536 }] as ChunkerParams[]) {
      const roots = new Set<string>()
      for (const segment of [undefined, 65536, 1024 * 1024]) {
        const store = await openStore(join(dir, `s-${chunker.kind}-${segment ?? 'default'}`))
        try {
          const r = await importImage(store.blocks, path, { chunker, tmpDir: dir, threads: 'inline', segment })
          roots.add(`${r.root.toString()} ${r.blocks} ${r.bytesStored}`)
          const check = await fsck(store.blocks, store.pins)
          expect(check.corrupt).toEqual([])
        } finally {
          await store.close()
        }
      }
      expect(roots.size).toBe(1)
      results.push([...roots][0])
    }

    // The worker needs the compiled script: the built importer runs it (npm test builds first).
    const dist = resolve(import.meta.dirname, '../../dist')
    if (!existsSync(join(dist, 'dag/chunk-worker.js'))) return
    const built = await import(pathToFileURL(join(dist, 'dag/index.js')).href)
    const builtStore = await import(pathToFileURL(join(dist, 'store/index.js')).href)
    let i = 0
    for (const chunker of [{ kind: 'fastcdc', size: 16384 }, { kind: 'fixed', size: 65536 }] as ChunkerParams[]) {
      for (const segment of [65536, 1024 * 1024]) {
        const store = await builtStore.openStore(join(dir, `w-${chunker.kind}-${segment}`))
        try {
          const r = await built.importImage(store.blocks, path, { chunker, tmpDir: dir, threads: 'worker', segment })
          expect(`${r.root.toString()} ${r.blocks} ${r.bytesStored}`).toBe(results[i])
          // Importing again stores nothing.
          const again = await built.importImage(store.blocks, path, { chunker, tmpDir: dir, threads: 'worker', segment })
          expect(again.root.toString()).toBe(r.root.toString())
          expect(again.bytesStored).toBe(0)
        } finally {
          await store.close()
        }
      }
      i++
    }
  })

  it('a worker that fails answers with its error (dist)', async () => {
    const dist = resolve(import.meta.dirname, '../../dist')
    if (!existsSync(join(dist, 'dag/chunk-worker.js'))) return
    const { WorkerStage, chunkWorkerScript } = await import(pathToFileURL(join(dist, 'dag/chunk-stage.js')).href)
    const stage = new WorkerStage({ kind: 'fastcdc', size: 16384 }, 4 << 20, 1 << 20, 2, chunkWorkerScript(), { hash: true })
    try {
      // Segment 1 before segment 0: the engine refuses, the worker says so, the stage rejects.
      await expect(stage.run(1, 0)).rejects.toThrow(/chunk worker: .*out of order/)
      // The next request in order is answered (the engine was left as it was).
      stage.slots[1].set(pseudoRandom('w', stage.slots[1].length))
      const batch = await stage.run(0, 1)
      expect(batch.count).toBeGreaterThan(30)
    } finally {
      await stage.close()
    }
    await expect(stage.run(1, 0)).rejects.toThrow(/closed|exited/)
  })

  it('an aborted import stops cleanly (no read left in flight, store still usable)', async () => {
    const path = join(dir, 'fail.img')
    await writeFile(path, pseudoRandom('fail', 24 * 1024 * 1024))
    const store = await openStore(join(dir, 'fail-store'))
    try {
      const controller = new AbortController()
      let events = 0
      const run = importImage(store.blocks, path, {
        tmpDir: dir,
        threads: 'inline',
        segment: 65536,
        signal: controller.signal,
        // Progress comes every 8 MiB: abort at the first, with segments still in flight.
        onProgress: (e) => { if (e.type === 'import:progress' && ++events === 1) controller.abort() }
      })
      await expect(run).rejects.toMatchObject({ code: 'ERR_ABORTED' })
      const r = await importImage(store.blocks, path, { tmpDir: dir, threads: 'inline' })
      expect(r.blocks).toBeGreaterThan(100)
      expect((await fsck(store.blocks, store.pins)).corrupt).toEqual([])
    } finally {
      await store.close()
    }
  })
})
