import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { PullSession, type SessionHost } from '../../src/net/exchange/session.js'
import { Bitfield } from '../../src/net/exchange/bitfield.js'
import { T } from '../../src/net/exchange/messages.js'
import { loadSkeleton } from '../../src/net/exchange/skeleton.js'
import { openStore, type Store } from '../../src/store/index.js'
import { importImage } from '../../src/dag/index.js'
import { blockId } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import type { PeerClient } from '../../src/net/exchange/client.js'
import type { CID } from 'multiformats/cid'

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
    const leafIndex = new Map(skeleton.leaves.map((cid, i) => [blockId(cid), i]))
    const count = skeleton.leaves.length
    expect(count).toBe(256)

    let session: PullSession | undefined
    const asked = new Map<string, number[]>()
    const firstWant = new Map<string, number[]>()
    const peer = (key: string, have: { all: true } | { all: false, bitfield: Bitfield }): PeerClient => {
      const client = {
        key,
        closed: false,
        haves: new Map([[root.toString(), have]]),
        async want (cids: CID[]) {
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
    expect(await sink.blocks.hasMany(skeleton.leaves)).toEqual(skeleton.leaves.map(() => true))

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
})
