/**
 * Boot profiles, in process: the range set, the recorder (first reads only, adjacent ones coalesced,
 * bounded), the codec's checks, and the prefetch (profile order, store hits skipped, a bounded window,
 * failures counted not fatal) over a real disk DAG with a fake swarm.
 */
import { describe, it, expect } from 'vitest'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from '../helpers/cli.js'
import { openStore } from '../../src/store/index.js'
import { importImage, DiskReader } from '../../src/dag/index.js'
import { RangeSet, ProfileRecorder, encodeProfile, decodeProfile, prefetchProfile, MAX_PROFILE_READS, InvalidBootProfileError } from '../../src/runtime/index.js'
import * as dagCbor from '@ipld/dag-cbor'
import type { CID } from 'multiformats/cid'

describe('RangeSet', () => {
  it('returns the parts not seen before and merges what touches', () => {
    const set = new RangeSet()
    expect(set.add(100, 200)).toEqual([[100, 200]])
    expect(set.add(150, 250)).toEqual([[200, 250]])
    expect(set.add(0, 50)).toEqual([[0, 50]])
    expect(set.runs).toBe(2)
    expect(set.add(0, 300)).toEqual([[50, 100], [250, 300]])
    expect(set.runs).toBe(1)
    expect(set.add(10, 20)).toEqual([])
    expect(set.add(300, 310)).toEqual([[300, 310]])
    expect(set.runs).toBe(1)
    expect(set.add(5, 5)).toEqual([])
  })

  it('agrees with a bitmap on random ranges', () => {
    const set = new RangeSet()
    const seen = new Uint8Array(4096)
    for (let i = 0; i < 2000; i++) {
      const start = Math.floor(Math.random() * 4000)
      const end = start + 1 + Math.floor(Math.random() * 90)
      const gaps = set.add(start, end)
      const expected: Array<[number, number]> = []
      for (let b = start; b < end; b++) {
        if (seen[b] === 0) {
          const last = expected[expected.length - 1]
          if (last != null && last[1] === b) last[1]++
          else expected.push([b, b + 1])
          seen[b] = 1
        }
      }
      expect(gaps).toEqual(expected)
    }
  })
})

describe('ProfileRecorder', () => {
  it('keeps first reads in order, coalesces a continued read, ignores re-reads, per disk', () => {
    const r = new ProfileRecorder(2)
    r.onRead(0, 0, 4096)
    r.onRead(0, 4096, 4096) // continues the last range
    r.onRead(1, 0, 512)
    r.onRead(0, 0, 8192) // read before
    r.onRead(0, 65536, 4096)
    r.onRead(0, 6144, 4096) // half new: [8192, 10240)
    r.onRead(5, 0, 4096) // no such disk
    expect(r.stop()).toEqual({ version: 1, reads: [[0, 0, 8192], [1, 0, 512], [0, 65536, 4096], [0, 8192, 2048]] })
    expect(r.bytes).toBe(8192 + 512 + 4096 + 2048)
    r.onRead(0, 1 << 20, 4096) // stopped
    expect(r.count).toBe(4)
  })

  it('is bounded: at maxReads it stops and says so', () => {
    const r = new ProfileRecorder(1, { maxReads: 3 })
    for (let i = 0; i < 10; i++) r.onRead(0, i * 8192, 4096)
    expect(r.full).toBe(true)
    expect(r.stop().reads).toEqual([[0, 0, 4096], [0, 8192, 4096], [0, 16384, 4096]])
  })
})

describe('profile codec', () => {
  it('round-trips and refuses what breaks the format or its limits', () => {
    const p = { version: 1 as const, reads: [[0, 0, 4096], [1, 1 << 30, 512]] as Array<[number, number, number]> }
    expect(decodeProfile(encodeProfile(p))).toEqual(p)
    const bad = (value: unknown): void => { expect(() => decodeProfile(dagCbor.encode(value))).toThrow(InvalidBootProfileError) }
    bad({ version: 2, reads: [] })
    bad({ version: 1 })
    bad({ version: 1, reads: [[0, 0]] })
    bad({ version: 1, reads: [[0, -1, 10]] })
    bad({ version: 1, reads: [[0, 0, 0]] })
    bad({ version: 1, reads: [[16, 0, 10]] })
    bad({ version: 1, reads: [[0, 0.5, 10]] })
    bad({ version: 1, reads: Array.from({ length: MAX_PROFILE_READS + 1 }, () => [0, 0, 1]) })
    expect(() => decodeProfile(new Uint8Array([0xff, 0x00]))).toThrow(/not dag-cbor/)
    try { decodeProfile(new Uint8Array([0xff])) } catch (err) { expect((err as any).code).toBe('ERR_INVALID_BOOT_PROFILE') }
  })
})

describe('prefetchProfile', () => {
  it('fetches the leaves behind the ranges in profile order at priority 1, skipping what the store has', async () => {
    const { dir, cleanup } = await tempDir('cp-profile-')
    try {
      const image = join(dir, 'disk.img')
      const MiB = 1024 * 1024
      await writeFile(image, randomBytes(4 * MiB))
      const store = await openStore(join(dir, 'store'))
      try {
        const { root } = await importImage(store.blocks, image, { chunker: { kind: 'fixed', size: 16384 }, format: 'raw' })
        const reader = await DiskReader.open(root, store.blocks)
        const leavesOf = async (offset: number, length: number): Promise<string[]> => {
          const out: string[] = []
          for await (const l of reader.leavesIn(offset, length)) out.push(l.cid!.toString())
          return out
        }
        const local = new Set((await leavesOf(2 * MiB, 16384)).concat())
        const asked: Array<{ cids: string[], priority: number }> = []
        let inflight = 0
        let maxInflight = 0
        const result = await prefetchProfile({
          version: 1,
          reads: [[0, 3 * MiB, 100_000], [0, 0, 40_000], [0, 2 * MiB, 16384], [0, 3 * MiB, 10], [7, 0, 4096]]
        }, {
          disks: [{ root, blocks: store.blocks }],
          hasMany: async (cids: CID[]) => cids.map(c => local.has(c.toString())),
          fetch: async (r, cids, o) => {
            expect(r.equals(root)).toBe(true)
            asked.push({ cids: cids.map(c => c.toString()), priority: o.priority })
            maxInflight = Math.max(maxInflight, ++inflight)
            await new Promise(resolve => setTimeout(resolve, 5))
            inflight--
            if (cids.some(c => c.toString() === 'never')) throw new Error('no')
            return await Promise.all(cids.map(async c => await store.blocks.get(c)))
          }
        }, { batchBytes: 32768, window: 2 })
        const expected = [...await leavesOf(3 * MiB, 100_000), ...await leavesOf(0, 40_000)]
        expect(asked.flatMap(a => a.cids)).toEqual(expected)
        expect(asked.every(a => a.priority === 1)).toBe(true)
        expect(maxInflight).toBeLessThanOrEqual(2)
        expect(result).toMatchObject({ blocks: expected.length, bytes: expected.length * 16384, local: 1, failed: 0 })

        // A request no peer answers is counted; the prefetch goes on with the rest.
        const failing = await prefetchProfile({ version: 1, reads: [[0, 0, 16384], [0, MiB, 16384]] }, {
          disks: [{ root, blocks: store.blocks }],
          hasMany: async cids => cids.map(() => false),
          fetch: async (_r, cids) => { if (asked.length++ % 2 === 0) throw new Error('nobody'); return cids.map(() => new Uint8Array(16384)) }
        }, { batchBytes: 1 })
        expect(failing).toMatchObject({ blocks: 1, failed: 1 })

        // Aborted: stops with an AbortError.
        const controller = new AbortController()
        controller.abort()
        await expect(prefetchProfile({ version: 1, reads: [[0, 0, 16384]] }, {
          disks: [{ root, blocks: store.blocks }], hasMany: async cids => cids.map(() => false), fetch: async () => []
        }, { signal: controller.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' })
      } finally {
        await store.close()
      }
    } finally {
      await cleanup()
    }
  })
})
