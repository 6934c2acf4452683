/**
 * The demand fetcher's priorities, in process with fake peers: a prefetch asks at priority 1; a guest
 * read of the same block while it is queued asks again at 0 (demand never waits behind the prefetch
 * queue), both callers get the first copy, and the request still queued at 1 is cancelled.
 */
import { describe, it, expect } from 'vitest'
import { DemandFetcher } from '../../src/net/exchange/demand.js'
import { T } from '../../src/net/exchange/messages.js'
import { rawCid } from '../../src/dag/hash.js'
import type { CID } from 'multiformats/cid'

function fakePeer (key: string): any {
  return {
    key,
    closed: false,
    wants: [] as Array<{ cids: string[], priority: number }>,
    cancels: [] as string[][],
    async want (cids: CID[], priority: number) { this.wants.push({ cids: cids.map(String), priority }) },
    async cancel (cids: CID[]) { this.cancels.push(cids.map(String)) }
  }
}

function fakeHost (peers: any[]): any {
  const stored = new Map<string, Uint8Array>()
  return {
    store: {
      hasMany: async (cids: CID[]) => cids.map(c => stored.has(String(c))),
      get: async (cid: CID) => stored.get(String(cid))!,
      putMany: async (blocks: Array<{ cid: CID, bytes: Uint8Array }>) => { for (const b of blocks) stored.set(String(b.cid), b.bytes) },
      commit: async () => {}
    },
    candidates: async () => peers,
    ban: () => { throw new Error('nobody should be banned') }
  }
}

const tick = async (): Promise<void> => { await new Promise(resolve => setTimeout(resolve, 20)) }

describe('DemandFetcher priorities', () => {
  it('a demand read of a block queued at prefetch priority asks again at demand priority', async () => {
    const peer = fakePeer('a')
    const fetcher = new DemandFetcher(fakeHost([peer]))
    const bytes = new TextEncoder().encode('a block the boot reads early')
    const cid = rawCid(bytes)
    const root = rawCid(new TextEncoder().encode('root'))
    const prefetch = fetcher.fetch(root, [cid], { priority: 1 })
    await tick()
    expect(peer.wants).toEqual([{ cids: [String(cid)], priority: 1 }])
    const demand = fetcher.fetch(root, [cid])
    await tick()
    expect(peer.wants).toEqual([{ cids: [String(cid)], priority: 1 }, { cids: [String(cid)], priority: 0 }])
    expect(fetcher.onMessage(peer, { type: T.BLOCK, cid, compressed: false, data: bytes })).toBe(true)
    expect(await demand).toEqual([bytes])
    expect(await prefetch).toEqual([bytes])
    // The copy still queued at priority 1 is cancelled; the one that came is not counted unsolicited.
    expect(peer.cancels).toEqual([[String(cid)]])
    expect(fetcher.onMessage(peer, { type: T.BLOCK, cid, compressed: false, data: bytes })).toBe(true)
  })

  it('a prefetch of a block already wanted on demand does not lower its priority', async () => {
    const peer = fakePeer('a')
    const fetcher = new DemandFetcher(fakeHost([peer]))
    const bytes = new TextEncoder().encode('another block')
    const cid = rawCid(bytes)
    const root = rawCid(new TextEncoder().encode('root'))
    const demand = fetcher.fetch(root, [cid])
    await tick()
    const prefetch = fetcher.fetch(root, [cid], { priority: 1 })
    await tick()
    expect(peer.wants).toEqual([{ cids: [String(cid)], priority: 0 }])
    fetcher.onMessage(peer, { type: T.BLOCK, cid, compressed: false, data: bytes })
    expect(await Promise.all([demand, prefetch])).toEqual([[bytes], [bytes]])
    expect(peer.cancels).toEqual([])
  })
})
