import { Priority, T, type Message } from './messages.js'
import { blockId, verifyBlock } from '../../dag/hash.js'
import { decompressBlock } from '../../dag/wire.js'
import { MAX_BLOCK_SIZE } from '../../dag/node.js'
import { AbortError, BlockMissingError } from '../../errors.js'
import type { PeerClient } from './client.js'
import type { Blockstore } from '../../store/blockstore.js'
import type { FetchOptions } from '../interface.js'
import type { CID } from 'multiformats/cid'

/** Peers asked for one block at once (the first answer wins, the others are cancelled). */
const COPIES = 2
/** An ask unanswered for this long is given up and another peer is asked. */
const ASK_TIMEOUT = 5_000
const ROUND_MS = 250
/** @default 30 s: how long a demand fetch waits for any peer to send the block. */
const FETCH_TIMEOUT = 30_000
const COMMIT_DELAY = 1_000
/** A copy of a block that arrives this long after another peer's is still ours (not unsolicited). */
const LATE_COPY_MS = 60_000

export interface DemandHost {
  store: Blockstore
  /** Clients of peers that may hold `root`, holders first (asks new peers INTEREST as a side effect). */
  candidates(root: CID, signal: AbortSignal): Promise<PeerClient[]>
  ban(client: PeerClient, reason: string): void
}

interface Want {
  cid: CID
  /** Who was asked and when (by client key). */
  asked: Map<string, { at: number, client: PeerClient }>
  refused: Set<string>
  /** The most urgent priority any caller asked it at (a demand read overtakes a prefetch). */
  priority: Priority
  /** Peers asked at a lower priority before it was raised: they may still send it once more. */
  stale: Map<string, PeerClient>
  done: Promise<Uint8Array>
  resolve(bytes: Uint8Array): void
}

/**
 * Blocks wanted now, outside any pull: a booting VM read a block the store lacks. Asked at the
 * demand priority (peers serve it before prefetch and background pulls), from up to two peers at
 * once, re-asked elsewhere after a timeout or a DONT_HAVE; verified, stored, returned.
 */
export class DemandFetcher {
  private readonly host: DemandHost
  private readonly wants = new Map<string, Want>()
  /** Recently delivered demand blocks, for the copies still on the wire from other peers. */
  private readonly delivered = new Map<string, number>()
  private commitTimer?: ReturnType<typeof setTimeout>

  constructor (host: DemandHost) {
    this.host = host
  }

  async fetch (root: CID, cids: CID[], options: FetchOptions = {}): Promise<Uint8Array[]> {
    const present = await this.host.store.hasMany(cids)
    const priority = options.priority ?? Priority.Demand
    const out: Array<Promise<Uint8Array>> = []
    const mine: Want[] = []
    for (const [i, cid] of cids.entries()) {
      if (present[i] === true) { out.push(this.host.store.get(cid)); continue }
      const id = blockId(cid)
      let want = this.wants.get(id)
      if (want == null) {
        let resolve!: (bytes: Uint8Array) => void
        const done = new Promise<Uint8Array>(r => { resolve = r })
        want = { cid, asked: new Map(), refused: new Set(), priority, stale: new Map(), done, resolve }
        this.wants.set(id, want)
      } else if (priority < want.priority) {
        // Asked before at a lower priority (a prefetch): the peers queued it behind their more
        // urgent work, so ask again at this one (a copy that arrives twice is a late copy, not unsolicited).
        want.priority = priority
        for (const [key, ask] of want.asked) want.stale.set(key, ask.client)
        want.asked.clear()
      }
      mine.push(want)
      out.push(want.done)
    }
    if (mine.length > 0) await this.drive(root, mine, options)
    return await Promise.all(out)
  }

  /** Asks peers until every want is answered, the deadline passes, or the caller aborts. */
  private async drive (root: CID, wants: Want[], options: FetchOptions): Promise<void> {
    const controller = new AbortController()
    const signal = options.signal != null ? AbortSignal.any([options.signal, controller.signal]) : controller.signal
    const deadline = Date.now() + (options.timeoutMs ?? FETCH_TIMEOUT)
    let settled = false
    void Promise.all(wants.map(async w => await w.done)).then(() => { settled = true })
    try {
      while (!settled) {
        if (options.signal?.aborted === true) throw new AbortError()
        const left = wants.filter(w => this.wants.has(blockId(w.cid)))
        if (left.length === 0) break
        if (Date.now() > deadline) {
          throw new BlockMissingError(`no peer sent block ${left[0]!.cid} of ${root} within ${Math.round((options.timeoutMs ?? FETCH_TIMEOUT) / 1000)} s`)
        }
        const clients = await this.host.candidates(root, signal)
        const batches = new Map<PeerClient, Map<Priority, CID[]>>()
        const now = Date.now()
        for (const want of left) {
          for (const [key, ask] of want.asked) if (now - ask.at > ASK_TIMEOUT) { want.asked.delete(key); want.refused.add(key) }
          let asking = want.asked.size
          for (const client of clients) {
            if (asking >= COPIES) break
            if (client.closed || want.asked.has(client.key) || want.refused.has(client.key)) continue
            want.asked.set(client.key, { at: now, client })
            asking++
            let byPriority = batches.get(client)
            if (byPriority == null) batches.set(client, byPriority = new Map())
            let batch = byPriority.get(want.priority)
            if (batch == null) byPriority.set(want.priority, batch = [])
            batch.push(want.cid)
          }
          // Everyone refused or timed out: start over (a peer may have fetched it meanwhile).
          if (asking === 0 && want.refused.size > 0 && clients.length > 0) want.refused.clear()
        }
        for (const [client, byPriority] of batches) {
          for (const [priority, batch] of byPriority) void client.want(batch, priority).catch(() => {})
        }
        await new Promise<void>(resolve => {
          const timer = setTimeout(resolve, ROUND_MS)
          void Promise.all(left.map(async w => await w.done)).then(() => { clearTimeout(timer); resolve() })
        })
      }
    } finally {
      controller.abort()
    }
  }

  /** A BLOCK or DONT_HAVE for a demanded block: true when it was one of ours. */
  onMessage (client: PeerClient, message: Message): boolean {
    if (message.type === T.DONT_HAVE) {
      let ours = false
      for (const cid of message.cids) {
        const want = this.wants.get(blockId(cid))
        if (want == null) continue
        want.asked.delete(client.key)
        want.refused.add(client.key)
        ours = true
      }
      return ours
    }
    if (message.type !== T.BLOCK) return false
    // Every block a pull receives comes here first: nothing to look up while no VM waits for one.
    if (this.wants.size === 0 && this.delivered.size === 0) return false
    const id = blockId(message.cid)
    const want = this.wants.get(id)
    if (want == null) return this.isLateCopy(id)
    let bytes: Uint8Array
    try {
      bytes = message.compressed ? decompressBlock(message.data, MAX_BLOCK_SIZE) : message.data.slice()
    } catch {
      this.host.ban(client, `undecodable compressed block ${message.cid}`)
      return true
    }
    if (!verifyBlock(want.cid, bytes)) {
      this.host.ban(client, `block ${message.cid} does not match its hash`)
      want.asked.delete(client.key)
      return true
    }
    this.wants.delete(id)
    this.delivered.set(id, Date.now())
    for (const [key, ask] of want.asked) {
      if (key !== client.key && !want.stale.has(key)) void ask.client.cancel([want.cid]).catch(() => {})
    }
    // Its other request (the one at the old priority) is still queued there, the sender's included.
    for (const stale of want.stale.values()) void stale.cancel([want.cid]).catch(() => {})
    void this.store(want.cid, bytes)
    want.resolve(bytes)
    return true
  }

  private async store (cid: CID, bytes: Uint8Array): Promise<void> {
    try {
      await this.host.store.putMany([{ cid, bytes }], { trusted: true })
    } catch {
      return // the caller has the bytes; a later read fetches them again
    }
    // Committed (fdatasync + index) shortly after the last block, not per block.
    if (this.commitTimer != null) clearTimeout(this.commitTimer)
    this.commitTimer = setTimeout(() => { void this.host.store.commit().catch(() => {}) }, COMMIT_DELAY)
    this.commitTimer.unref?.()
  }

  private isLateCopy (id: string): boolean {
    const now = Date.now()
    for (const [key, at] of this.delivered) if (now - at > LATE_COPY_MS) this.delivered.delete(key)
    return this.delivered.has(id)
  }
}
