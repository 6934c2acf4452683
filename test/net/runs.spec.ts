import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { PullSession, type SessionHost } from '../../src/net/exchange/session.js'
import { Bitfield } from '../../src/net/exchange/bitfield.js'
import { T } from '../../src/net/exchange/messages.js'
import { leafCids, loadSkeleton } from '../../src/net/exchange/skeleton.js'
import { openStore, type Store } from '../../src/store/index.js'
import { importImage } from '../../src/dag/index.js'
import { blockId, decodeCid, rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import { Serving } from '../../src/net/exchange/server.js'
import { Priority } from '../../src/net/exchange/messages.js'
import type { Channel } from '../../src/net/exchange/channel.js'
import type { PeerClient } from '../../src/net/exchange/client.js'
import type { CID } from 'multiformats/cid'

/** A CID as a WANT or CANCEL names it (a pull names leaves by their binary form). */
const asCid = (c: CID | Uint8Array): CID => c instanceof Uint8Array ? decodeCid(c) : c

/**
 * The pull's scheduler on its own: two peers that answer from a real store, in this process (the
 * wire is covered by the swarm specs). A server compresses what one WANT asked for together, so the
 * scheduler asks a peer for runs of neighbouring leaves; rarest first only chooses where a run starts.
 */
describe('PullSession: runs of neighbouring leaves', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let source: Store
  let sink: Store
  let root: CID
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir())
    source = await openStore(join(dir, 'source'))
    sink = await openStore(join(dir, 'sink'))
    const image = join(dir, 'image.raw')
    await writeFile(image, pseudoRandom('runs', 4 * 1024 * 1024))
    root = (await importImage(source.blocks, image, { chunker: { kind: 'fixed', size: 16 * 1024 }, tmpDir: dir })).root
  })
  afterAll(async () => {
    await source.close()
    await sink.close()
    await cleanup()
  })

  it('asks a peer for the leaves that follow the one it asked for, even where rarest first would skip them', async () => {
    const rootBytes = await source.blocks.get(root)
    const skeleton = await loadSkeleton(root, rootBytes, async cids => await source.blocks.getMany(cids))
    const allLeaves = leafCids(skeleton)
    const leafIndex = new Map(skeleton.ids.map((id, i) => [id, i]))
    const count = skeleton.count
    expect(count).toBe(256)

    let session: PullSession | undefined
    const asked = new Map<string, number[]>()
    const firstWant = new Map<string, number[]>()
    const peer = (key: string, have: { all: true } | { all: false, bitfield: Bitfield }): PeerClient => {
      const client = {
        key,
        closed: false,
        haves: new Map([[root.toString(), have]]),
        async want (named: Array<CID | Uint8Array>) {
          const cids = named.map(asCid)
          const leaves = cids.flatMap(c => leafIndex.has(blockId(c)) ? [leafIndex.get(blockId(c))!] : [])
          asked.set(key, [...(asked.get(key) ?? []), ...leaves])
          if (leaves.length > 0 && !firstWant.has(key)) firstWant.set(key, leaves)
          const blocks = await source.blocks.getMany(cids)
          setTimeout(() => {
            cids.forEach((cid, i) => session!.onMessage(client as unknown as PeerClient, { type: T.BLOCK, cid, compressed: false, data: blocks[i]! }))
          }, 5)
        },
        async cancel () {}
      }
      return client as unknown as PeerClient
    }
    // One peer holds every leaf, the other every even one: the odd leaves are the rarest.
    const evens = new Bitfield(count)
    for (let i = 0; i < count; i += 2) evens.set(i)
    const full = peer('full', { all: true })
    const half = peer('half', { all: false, bitfield: evens })
    const host: SessionHost = {
      store: sink.blocks,
      clients: () => [full, half],
      ban: (_client, reason) => { throw new Error(`banned: ${reason}`) },
      announce: () => {},
      provide: () => {}
    }
    session = new PullSession(root, host, {}, {})
    const pulled = session.run()
    session.onHave(full)
    session.onHave(half)
    await pulled
    expect(await sink.blocks.hasMany(allLeaves)).toEqual(allLeaves.map(() => true))

    // The peer with every leaf: rarest first alone would ask it for 1, 3, 5, ... (no neighbours at
    // all); with runs, what it is asked for follows the leaf asked for just before.
    const share = (leaves: number[]): number => {
      let neighbours = 0
      for (let i = 1; i < leaves.length; i++) if (leaves[i] === leaves[i - 1]! + 1) neighbours++
      return neighbours / Math.max(1, leaves.length - 1)
    }
    const first = firstWant.get('full')!
    expect(first.length).toBeGreaterThanOrEqual(32)
    expect(share(first)).toBeGreaterThan(0.9)
    expect(share(asked.get('full')!)).toBeGreaterThan(0.3)
    // Each leaf was asked for once, from a peer that holds it.
    const all = [...asked.values()].flat()
    expect(new Set(all).size).toBe(all.length)
    for (const i of asked.get('half') ?? []) expect(i % 2).toBe(0)
  })

  it('moves requests waiting at a seed to a peer that announces those blocks meanwhile, and CANCELs them at the seed', async () => {
    const rootBytes = await source.blocks.get(root)
    const skeleton = await loadSkeleton(root, rootBytes, async cids => await source.blocks.getMany(cids))
    const allLeaves = leafCids(skeleton)
    const leafIndex = new Map(skeleton.ids.map((id, i) => [id, i]))
    const count = skeleton.count
    const store = await openStore(join(dir, 'sink-migrate'))
    let session: PullSession | undefined
    let finished = false
    const asked = new Map<string, string[][]>()
    const cancelled = new Map<string, string[]>()
    const peer = (key: string, have: { all: true } | { all: false, bitfield: Bitfield }, firstLeavesDelayMs: number): PeerClient => {
      const client = {
        key,
        closed: false,
        haves: new Map([[root.toString(), have]]),
        async want (named: Array<CID | Uint8Array>) {
          const cids = named.map(asCid)
          const wants = asked.get(key) ?? []
          asked.set(key, wants)
          const ids = cids.map(c => blockId(c))
          const leafWant = ids.some(id => leafIndex.has(id))
          const first = leafWant && !wants.some(w => w.some(id => leafIndex.has(id)))
          wants.push(ids)
          const blocks = await source.blocks.getMany(cids)
          // The seed answers its first WANT of leaves late (its upload is shared), the rest at once.
          setTimeout(() => {
            if (finished) return
            cids.forEach((cid, i) => {
              if (cancelled.get(key)?.includes(blockId(cid)) === true) return
              session!.onMessage(client as unknown as PeerClient, { type: T.BLOCK, cid, compressed: false, data: blocks[i]! })
            })
          }, first ? firstLeavesDelayMs : 1)
        },
        async cancel (cids: Array<CID | Uint8Array>) { cancelled.set(key, [...(cancelled.get(key) ?? []), ...cids.map(c => blockId(asCid(c)))]) }
      }
      return client as unknown as PeerClient
    }
    const seed = peer('seed', { all: true }, 3_000)
    const evens = new Bitfield(count)
    const host = peer('host', { all: false, bitfield: evens }, 0)
    session = new PullSession(root, {
      store: store.blocks,
      clients: () => [seed, host],
      ban: (_client, reason) => { throw new Error(`banned: ${reason}`) },
      announce: () => {},
      provide: () => {}
    }, {}, {})
    try {
      const pulled = session.run()
      session.onHave(seed)
      session.onHave(host)
      // The other host stores the even leaves a moment later (it got them elsewhere) and announces them.
      setTimeout(() => {
        for (let i = 0; i < count; i += 2) evens.set(i)
        session!.onHave(host)
      }, 100)
      await pulled
      finished = true
      expect(await store.blocks.hasMany(allLeaves)).toEqual(allLeaves.map(() => true))
      // The even leaves of the seed's first (late) WANT moved to the host: CANCELed at the seed,
      // asked of the host. Without moving, they would wait the seed's 3 s (nothing is late for
      // endgame while other leaves are still pending).
      const firstToSeed = asked.get('seed')!.find(w => w.some(id => leafIndex.has(id)))!
      const evensAtSeed = firstToSeed.filter(id => leafIndex.get(id)! % 2 === 0)
      expect(evensAtSeed.length).toBeGreaterThan(8)
      expect(cancelled.get('seed')).toEqual(expect.arrayContaining(evensAtSeed))
      expect(asked.get('host')!.flat()).toEqual(expect.arrayContaining(evensAtSeed))
    } finally {
      finished = true
      await store.close()
    }
  })

  it('asks for nothing more while the store is behind, and finishes once it catches up', async () => {
    const rootBytes = await source.blocks.get(root)
    const skeleton = await loadSkeleton(root, rootBytes, async cids => await source.blocks.getMany(cids))
    const allLeaves = leafCids(skeleton)
    const leafIndex = new Map(skeleton.ids.map((id, i) => [id, i]))
    const store = await openStore(join(dir, 'slow-sink'))
    // The sink's writes of leaves wait until released (a disk far slower than the network).
    let release!: () => void
    const writable = new Promise<void>(resolve => { release = resolve })
    const slow = new Proxy(store.blocks, {
      get (target, prop) {
        if (prop === 'putMany') {
          return async (blocks: Array<{ cid: CID, bytes: Uint8Array }>, options: object) => {
            if (blocks.some(b => leafIndex.has(blockId(b.cid)))) await writable
            return await target.putMany(blocks, options)
          }
        }
        const value = Reflect.get(target, prop, target)
        return typeof value === 'function' ? value.bind(target) : value
      }
    })
    try {
      let session: PullSession | undefined
      let asked = 0
      let lastWantAt = Date.now()
      const client = {
        key: 'seed',
        closed: false,
        haves: new Map([[root.toString(), { all: true }]]),
        async want (named: Array<CID | Uint8Array>) {
          const cids = named.map(asCid)
          asked += cids.filter(c => leafIndex.has(blockId(c))).length
          lastWantAt = Date.now()
          const blocks = await source.blocks.getMany(cids)
          setTimeout(() => {
            cids.forEach((cid, i) => session!.onMessage(client as unknown as PeerClient, { type: T.BLOCK, cid, compressed: false, data: blocks[i]! }))
          }, 2)
        },
        async cancel () {}
      } as unknown as PeerClient
      session = new PullSession(root, {
        store: slow,
        clients: () => [client],
        ban: (_client, reason) => { throw new Error(`banned: ${reason}`) },
        announce: () => {},
        provide: () => {}
      }, { window: 256 * 1024, maxUnstored: 512 * 1024 }, {})
      const pulled = session.run()
      session.onHave(client)
      // Until the asking stops (the leaves are 16 KiB: 256 of them, 4 MiB).
      while (Date.now() - lastWantAt < 500) await new Promise(resolve => setTimeout(resolve, 50))
      // At most what waits to be stored (512 KiB) plus a window (256 KiB) and the batch that crossed
      // the line: without the bound, every leaf would have been asked for and held in memory.
      expect(asked).toBeGreaterThan(0)
      expect(asked * 16 * 1024).toBeLessThanOrEqual(1024 * 1024)
      release()
      await pulled
      expect(asked).toBe(skeleton.count)
      expect(await store.blocks.hasMany(allLeaves)).toEqual(allLeaves.map(() => true))
    } finally {
      release()
      await store.close()
    }
  })
})


describe('Serving: wants for blocks just sent elsewhere go last', () => {
  it('takes the others first, and the put-off ones when nothing else is queued', () => {
    const serving = new Serving({} as unknown as Channel, 'peer')
    const cids = Array.from({ length: 6 }, (_, i) => rawCid(pseudoRandom(`serve-${i}`, 64)))
    serving.enqueue(Priority.Background, cids)
    const putOff = new Set([blockId(cids[0]!), blockId(cids[2]!)])
    const later = (cid: CID): boolean => putOff.has(blockId(cid))
    expect(serving.take(3, later).map(c => blockId(c))).toEqual([1, 3, 4].map(i => blockId(cids[i]!)))
    expect(serving.take(3, later).map(c => blockId(c))).toEqual([5].map(i => blockId(cids[i]!)))
    expect(serving.take(3, later).map(c => blockId(c))).toEqual([0, 2].map(i => blockId(cids[i]!)))
    expect(serving.take(3, later)).toEqual([])
    // A demand want (a booting VM's read) is never put off.
    serving.enqueue(Priority.Demand, [cids[0]!])
    expect(serving.take(3, later).map(c => blockId(c))).toEqual([blockId(cids[0]!)])
  })
})

describe('Serving: a peer that takes redirects gets ELSEWHERE for blocks just sent elsewhere', () => {
  it('redirects each block once per peer, and serves it when the peer asks again', () => {
    const serving = new Serving({} as unknown as Channel, 'peer')
    serving.redirects = true
    const cids = Array.from({ length: 4 }, (_, i) => rawCid(pseudoRandom(`redirect-${i}`, 64)))
    const sent = new Set([blockId(cids[1]!), blockId(cids[3]!)])
    const later = (cid: CID): boolean => sent.has(blockId(cid))
    serving.enqueue(Priority.Background, cids)
    expect(serving.take(8, later).map(c => blockId(c))).toEqual([0, 2].map(i => blockId(cids[i]!)))
    expect(serving.elsewhere.map(c => blockId(c))).toEqual([1, 3].map(i => blockId(cids[i]!)))
    serving.elsewhere = []
    // Asked again (nobody else delivered it): served, not redirected twice.
    serving.enqueue(Priority.Background, [cids[1]!])
    expect(serving.take(8, later).map(c => blockId(c))).toEqual([blockId(cids[1]!)])
    expect(serving.elsewhere).toEqual([])
    // A demand want is never redirected.
    serving.enqueue(Priority.Demand, [cids[3]!])
    expect(serving.take(8, later).map(c => blockId(c))).toEqual([blockId(cids[3]!)])
  })
})
