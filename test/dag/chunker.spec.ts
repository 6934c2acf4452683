import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { getChunker, type Chunk, type ChunkerParams } from '../../src/dag/chunker/index.js'
import { GEAR, highMask } from '../../src/dag/chunker/gear.js'
import { RawSource } from '../../src/dag/source/raw.js'
import { pseudoRandom, writeImage } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'

async function chunks (path: string, params: ChunkerParams): Promise<Array<{ offset: number, length: number, hole: boolean }>> {
  const source = await RawSource.open(path)
  const out = []
  try {
    for await (const c of getChunker(params.kind)(source, params) as AsyncGenerator<Chunk>) out.push({ offset: c.offset, length: c.length, hole: c.bytes == null })
  } finally {
    await source.close()
  }
  return out
}

/** FastCDC as the paper states it, one byte at a time, no zero-run handling: the reference. */
function referenceCuts (buf: Uint8Array, avg: number): number[] {
  const min = avg / 4
  const max = avg * 4
  const bits = Math.log2(avg)
  const maskS = highMask(bits + 2)
  const maskL = highMask(bits - 2)
  const cuts: number[] = []
  let pos = 0
  while (pos < buf.length) {
    const end = Math.min(pos + max, buf.length)
    let cut = end
    if (end - pos > min) {
      let h = 0
      for (let i = pos + min; i < end; i++) {
        h = ((h << 1) + GEAR[buf[i]!]!) | 0
        if ((h & (i < pos + avg ? maskS : maskL)) === 0) { cut = i + 1; break }
      }
    }
    cuts.push(pos)
    pos = cut
  }
  return cuts
}

describe('chunkers', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir()) })
  afterAll(async () => { await cleanup() })

  it('FastCDC cuts exactly where the byte-at-a-time reference does (data without zero runs)', async () => {
    const data = pseudoRandom('ref', 24 * 1024 * 1024 + 12345)
    const path = join(dir, 'ref.img')
    await writeFile(path, data)
    for (const avg of [4096, 16384, 65536]) {
      const got = await chunks(path, { kind: 'fastcdc', size: avg })
      expect(got.map(c => c.offset)).toEqual(referenceCuts(data, avg))
      const lengths = got.slice(0, -1).map(c => c.length)
      expect(Math.min(...lengths)).toBeGreaterThanOrEqual(avg / 4)
      expect(Math.max(...lengths)).toBeLessThanOrEqual(avg * 4)
      const mean = data.length / got.length
      expect(mean).toBeGreaterThan(avg * 0.7)
      expect(mean).toBeLessThan(avg * 1.6)
    }
  })

  it('chunks cover the image exactly, in order, whatever its size', async () => {
    for (const size of [1, 4095, 4097, 100_000, 3 * 1024 * 1024 + 7]) {
      const path = join(dir, `cover-${size}.img`)
      await writeFile(path, pseudoRandom(`c${size}`, size))
      for (const params of [{ kind: 'fixed', size: 65536 }, { kind: 'fastcdc', size: 16384 }] as ChunkerParams[]) {
        const got = await chunks(path, params)
        let pos = 0
        for (const c of got) {
          expect(c.offset).toBe(pos)
          expect(c.length).toBeGreaterThan(0)
          pos += c.length
        }
        expect(pos).toBe(size)
      }
    }
  })

  it('a local edit changes only the chunks around it (content-defined boundaries resynchronise)', async () => {
    const a = pseudoRandom('edit', 8 * 1024 * 1024)
    const b = new Uint8Array(a.length + 100)
    b.set(a.subarray(0, 3_000_000))
    b.set(pseudoRandom('ins', 100), 3_000_000)
    b.set(a.subarray(3_000_000), 3_000_100)
    await writeFile(join(dir, 'a.img'), a)
    await writeFile(join(dir, 'b.img'), b)
    const params: ChunkerParams = { kind: 'fastcdc', size: 16384 }
    const ca = await chunks(join(dir, 'a.img'), params)
    const cb = await chunks(join(dir, 'b.img'), params)
    const lengthsA = new Set(ca.map(c => `${c.offset + (c.offset >= 3_000_000 ? 100 : 0)}:${c.length}`))
    const changed = cb.filter(c => !lengthsA.has(`${c.offset}:${c.length}`))
    // An insertion shifts everything after it; only the chunks touching it differ.
    expect(changed.length).toBeLessThanOrEqual(3)
  })

  it('zero runs of 32 KiB or more are holes, found the same whether the file is sparse or not', async () => {
    const size = 4 * 1024 * 1024
    const extents: Array<[number, number, string]> = [[0, 100_000, 'x'], [1_048_576, 300_000, 'y'], [3_000_000, 5000, 'z']]
    const sparse = join(dir, 'sparse.img')
    await writeImage(sparse, size, extents)
    const dense = join(dir, 'dense.img')
    const full = new Uint8Array(size)
    for (const [o, l, s] of extents) full.set(pseudoRandom(s, l), o)
    await writeFile(dense, full)
    for (const params of [{ kind: 'fixed', size: 65536 }, { kind: 'fastcdc', size: 16384 }] as ChunkerParams[]) {
      const a = await chunks(sparse, params)
      const b = await chunks(dense, params)
      expect(a).toEqual(b)
      const holeBytes = a.filter(c => c.hole).reduce((n, c) => n + c.length, 0)
      expect(holeBytes).toBeGreaterThan(size - 600_000)
    }
    const cdc = await chunks(sparse, { kind: 'fastcdc', size: 16384 })
    // A data chunk never runs into a hole: chunking restarts after each zero run.
    for (const c of cdc.filter(c => c.hole)) {
      expect(c.length).toBeGreaterThanOrEqual(32 * 1024)
    }
  })

  it('an all-zero image is one hole', async () => {
    const path = join(dir, 'zero.img')
    await writeImage(path, 64 * 1024 * 1024, [])
    const got = await chunks(path, { kind: 'fastcdc', size: 16384 })
    expect(got).toEqual([{ offset: 0, length: 64 * 1024 * 1024, hole: true }])
  })
})
