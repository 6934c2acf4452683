import { Channel } from './channel.js'
import { ProtocolError } from './frames.js'
import { FEATURES, PROTOCOL_VERSION, Priority, T, MAX_LIST, type Message } from './messages.js'
import { blockId } from '../../dag/hash.js'
import { compressBlock, WIRE_COMPRESSION } from '../../dag/wire.js'
import { frameGroups, getCodec, looksIncompressible, WIRE_BATCH_BLOCKS, ZSTD_BATCH } from './codec.js'
import type { Blockstore } from '../../store/blockstore.js'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

/** Wants a peer may have queued with us; more is a protocol violation (it ignores its window). */
export const MAX_QUEUED_WANTS = 8192
/** Wants read from the store together (16 KiB blocks: 1 MiB), and compressed together. */
const READ_BATCH = WIRE_BATCH_BLOCKS
/** Batches read from the store ahead of the one being sent. */
const READ_AHEAD = 2
/**
 * How long a block sent to one peer is redirected (ELSEWHERE), or served last, to others while they
 * keep this server busy (see sentElsewhere), in ms.
 */
const RECENT_MS = 30_000
/** Another peer served within this long (ms) makes our upload contended (see contended). */
const BUSY_MS = 1_000
/** Blocks one peer may be redirected for (each at most once); past it, every want is served. */
const MAX_REDIRECTED = 65_536
/** Blocks remembered as lately sent, at most. */
const RECENT_MAX = 65_536
/** Roots one peer may follow on one stream. */
const MAX_INTERESTS = 64

/** How the server answers INTEREST: what this host holds of a root. */
export type HaveLookup = (root: CID) => Promise<Omit<Extract<Message, { type: typeof T.HAVE }>, 'type'>>

export interface ServerEvents {
  onSent?(peer: string, bytes: number): void
  /** A client broke the protocol (malformed frames, wants past its window); its stream is already aborted. */
  onViolation?(peer: PeerId, err: ProtocolError): void
  /** Whether wants for blocks just sent elsewhere may be answered ELSEWHERE now (default: yes). */
  redirects?(): boolean
}

/** Codecs this host offers in HELLO, best first. */
export function wireCodecs (): string[] {
  return getCodec(ZSTD_BATCH.name) != null ? [ZSTD_BATCH.name, WIRE_COMPRESSION] : [WIRE_COMPRESSION]
}

/** The serving half of one inbound stream. */
export class Serving {
  readonly channel: Channel
  readonly peer: string
  /** How blocks go to this peer: as they are, DEFLATEd one by one, or batched in zstd frames. */
  compress: 'none' | 'deflate-raw' | 'zstd-batch' = 'none'
  /** The peer listed `elsewhere` in HELLO: background wants for blocks just sent elsewhere are answered ELSEWHERE. */
  redirects = false
  /** Blocks this peer was sent ELSEWHERE for: asked again, they are served. */
  private readonly redirected = new Set<string>()
  /** Wants `take` redirected, for the serving loop to answer with ELSEWHERE. */
  elsewhere: CID[] = []
  /** When wants of this peer were last taken to be served (ms). */
  lastServed = 0
  readonly interests = new Set<string>()
  /** Roots for which the peer got a full HAVE (all, or a bitfield) from us: index updates mean something to it. */
  readonly described = new Set<string>()
  private readonly queues: CID[][] = [[], [], []]
  private queued = 0
  private readonly cancelled = new Set<string>()
  private wake?: () => void
  private stopped = false

  constructor (channel: Channel, peer: string) {
    this.channel = channel
    this.peer = peer
  }

  enqueue (priority: number, cids: CID[]): void {
    if (this.queued + cids.length > MAX_QUEUED_WANTS) throw new ProtocolError(`peer queued more than ${MAX_QUEUED_WANTS} wants`)
    // Nearly always empty: an id per wanted block (a string each) only when something was cancelled.
    if (this.cancelled.size > 0) for (const cid of cids) this.cancelled.delete(blockId(cid))
    this.queues[priority]!.push(...cids)
    this.queued += cids.length
    this.wake?.()
  }

  cancel (cids: CID[]): void {
    for (const cid of cids) this.cancelled.add(blockId(cid))
  }

  /**
   * Up to `max` wanted CIDs of the highest priority that has any (none when nothing is queued).
   * Background wants `later` says to put off (blocks just sent to another peer) go to `elsewhere`
   * if the peer takes redirects (once per block), else after the rest of their queue, unless
   * nothing else is left.
   */
  take (max: number, later?: (cid: CID) => boolean): CID[] {
    for (const [priority, queue] of this.queues.entries()) {
      const putOffHere = priority === Priority.Background ? later : undefined
      const batch: CID[] = []
      const putOff: CID[] = []
      while (queue.length > 0 && batch.length < max) {
        const cid = queue.shift()!
        this.queued--
        if (this.cancelled.size > 0 && this.cancelled.delete(blockId(cid))) continue
        if (putOffHere?.(cid) !== true) {
          batch.push(cid)
          continue
        }
        const id = this.redirects && this.redirected.size < MAX_REDIRECTED ? blockId(cid) : undefined
        if (id != null && !this.redirected.has(id)) {
          this.redirected.add(id)
          this.elsewhere.push(cid)
        } else putOff.push(cid)
      }
      if (batch.length === 0) batch.push(...putOff.splice(0, max))
      if (putOff.length > 0) {
        queue.push(...putOff)
        this.queued += putOff.length
      }
      if (batch.length > 0) return batch
    }
    this.cancelled.clear()
    return []
  }

  /** Waits until a want is queued or the stream closes. */
  async waitForWants (): Promise<void> {
    while (this.queued === 0 && !this.done) {
      await new Promise<void>(resolve => { this.wake = resolve })
      this.wake = undefined
    }
  }

  get idle (): boolean { return this.queued === 0 }

  stop (): void {
    this.stopped = true
    this.wake?.()
  }

  /** The peer's stream ended: nothing more is read or sent for it. */
  get done (): boolean { return this.stopped || this.channel.isClosed }
}

/**
 * Serves blocks to peers: HELLO first (compression is used only if both sides list it), then WANTs
 * answered in priority order, each block read from the store (which re-hashes it) and sent, or a
 * DONT_HAVE. INTEREST is answered with what we hold of the root, and later with updates.
 */
export class BlockServer {
  private readonly store: Blockstore
  private readonly haves: HaveLookup
  private readonly events: ServerEvents
  private readonly serving = new Set<Serving>()
  /** Blocks lately read to send, and to whom: a block another peer just got is redirected or sent last. */
  private readonly recent = new Map<string, { at: number, to: Serving }>()
  compression = true

  constructor (store: Blockstore, haves: HaveLookup, events: ServerEvents = {}) {
    this.store = store
    this.haves = haves
    this.events = events
  }

  async handle (stream: Stream, connection: Connection): Promise<void> {
    const serving = new Serving(new Channel(stream), connection.remotePeer.toString())
    this.serving.add(serving)
    const loop = this.serve(serving)
    try {
      let first = true
      await serving.channel.each(async message => {
        if (first && message.type !== T.HELLO) throw new ProtocolError('expected HELLO first')
        first = false
        await this.onMessage(serving, message)
      })
    } catch (err) {
      serving.channel.abort(err as Error)
      if (err instanceof ProtocolError) this.events.onViolation?.(connection.remotePeer, err)
    } finally {
      this.serving.delete(serving)
      serving.stop()
      await loop.catch(() => {})
      await serving.channel.close().catch(() => {})
    }
  }

  /**
   * Whether `cid` went in the last RECENT_MS to a peer other than `peer` that is still connected. In
   * a swarm that peer announces it soon and can serve it: the asker is redirected there (ELSEWHERE),
   * or, if it does not take redirects, served it last (it may move its request there: CANCEL). This
   * saves this host's upload; in a fan-out, the publisher's, the swarm's scarce link.
   */
  private sentElsewhere (cid: CID, peer: string, now: number): boolean {
    const sent = this.recent.get(blockId(cid))
    return sent != null && sent.to.peer !== peer && now - sent.at < RECENT_MS && !sent.to.done
  }

  /**
   * Whether our upload is contended (another peer has wants queued, or was served in the last
   * BUSY_MS) and we may redirect (we are not pulling): a block some peer already got is then better
   * fetched from that peer. Otherwise every want is served at once.
   */
  private contended (serving: Serving): boolean {
    if (this.events.redirects?.() === false) return false
    const since = Date.now() - BUSY_MS
    for (const other of this.serving) if (other !== serving && !other.done && (!other.idle || other.lastServed > since)) return true
    return false
  }

  private noteSent (cids: CID[], to: Serving): void {
    const at = Date.now()
    for (const cid of cids) {
      const id = blockId(cid)
      this.recent.delete(id)
      this.recent.set(id, { at, to })
    }
    // Oldest first (insertion order): drop what is too old, and never keep more than RECENT_MAX.
    for (const [id, sent] of this.recent) {
      if (this.recent.size <= RECENT_MAX && at - sent.at < RECENT_MS) break
      this.recent.delete(id)
    }
  }

  private async onMessage (serving: Serving, message: Message): Promise<void> {
    switch (message.type) {
      case T.HELLO:
        serving.redirects = message.features?.includes('elsewhere') === true
        serving.compress = !this.compression
          ? 'none'
          : message.compress.includes(ZSTD_BATCH.name) && getCodec(ZSTD_BATCH.name) != null
            ? 'zstd-batch'
            : message.compress.includes(WIRE_COMPRESSION) ? 'deflate-raw' : 'none'
        await serving.channel.send({ type: T.HELLO, version: PROTOCOL_VERSION, compress: this.compression ? wireCodecs() : [], features: [...FEATURES] })
        return
      case T.WANT: serving.enqueue(message.priority, message.cids); return
      case T.CANCEL: serving.cancel(message.cids); return
      case T.INTEREST: {
        if (serving.interests.size >= MAX_INTERESTS && !serving.interests.has(message.root.toString())) throw new ProtocolError('too many interests')
        serving.interests.add(message.root.toString())
        const have = await this.haves(message.root)
        if (have.all === true || have.bitfield != null) serving.described.add(message.root.toString())
        await serving.channel.send({ type: T.HAVE, ...have })
        return
      }
      default:
        throw new ProtocolError(`unexpected frame 0x${message.type.toString(16)} from a client`)
    }
  }

  /**
   * Answers wants in priority order. Up to READ_AHEAD batches are read from the store while earlier
   * ones are sent, so the stream never waits for the disk and the disk never waits for the stream; a
   * demand want arriving meanwhile waits for at most that many batches.
   */
  private async serve (serving: Serving): Promise<void> {
    let missing: CID[] = []
    const sendList = async (type: typeof T.DONT_HAVE | typeof T.ELSEWHERE, cids: CID[]): Promise<void> => {
      for (let i = 0; i < cids.length; i += MAX_LIST) await serving.channel.send({ type, cids: cids.slice(i, i + MAX_LIST) })
    }
    const sendMissing = async (): Promise<void> => {
      const cids = missing
      missing = []
      await sendList(T.DONT_HAVE, cids)
    }
    const sendElsewhere = async (): Promise<void> => {
      const cids = serving.elsewhere
      serving.elsewhere = []
      await sendList(T.ELSEWHERE, cids)
    }
    const reads: Array<Promise<Array<[CID, Uint8Array | undefined]>>> = []
    for (;;) {
      while (reads.length < READ_AHEAD) {
        const now = Date.now()
        const batch = serving.take(READ_BATCH, this.contended(serving) ? cid => this.sentElsewhere(cid, serving.peer, now) : undefined)
        if (batch.length === 0) break
        serving.lastServed = now
        // Noted when taken, not when sent: another peer's want for the same block, taken while this
        // batch is read, is redirected too.
        if (this.serving.size > 1) this.noteSent(batch, serving)
        reads.push(this.read(batch))
      }
      if (serving.elsewhere.length > 0) await sendElsewhere()
      if (reads.length === 0) {
        await sendMissing()
        await serving.waitForWants()
        if (serving.done) return
        continue
      }
      const held: Array<[CID, Uint8Array]> = []
      for (const [cid, data] of await reads.shift()!) {
        if (data != null) held.push([cid, data])
        else missing.push(cid)
      }
      if (serving.done) return
      if (missing.length >= MAX_LIST || (missing.length > 0 && held.length > 0)) await sendMissing()
      if (serving.compress === 'zstd-batch') {
        for (const group of frameGroups(held, ([, data]) => data.length)) await this.sendBatch(serving, group)
        continue
      }
      for (const [cid, data] of held) {
        const packed = serving.compress === 'deflate-raw' ? compressBlock(data) : undefined
        const payload = packed ?? data
        await serving.channel.send({ type: T.BLOCK, cid, compressed: packed != null, data: payload })
        this.events.onSent?.(serving.peer, payload.length)
      }
    }
  }

  /**
   * Blocks as one BLOCKS frame, compressed together (context across neighbouring blocks is where
   * zstd beats per-block compression); blocks that all look incompressible go as BLOCK frames,
   * without a copy.
   */
  private async sendBatch (serving: Serving, group: Array<[CID, Uint8Array]>): Promise<void> {
    if (group.every(([, data]) => looksIncompressible(data))) {
      for (const [cid, data] of group) {
        await serving.channel.send({ type: T.BLOCK, cid, compressed: false, data })
        this.events.onSent?.(serving.peer, data.length)
      }
      return
    }
    const payload = ZSTD_BATCH.encode(group.map(([, data]) => data))
    await serving.channel.send({ type: T.BLOCKS, cids: group.map(([cid]) => cid), payload })
    const total = group.reduce((n, [, data]) => n + data.length, 0)
    for (const [, data] of group) this.events.onSent?.(serving.peer, Math.round(payload.length * data.length / Math.max(1, total)))
  }

  /** Blocks from the store, verified, in one index round trip and as few preads as possible; undefined for those we lack. */
  private async read (cids: CID[]): Promise<Array<[CID, Uint8Array | undefined]>> {
    const blocks = await this.store.readMany(cids).catch(() => cids.map(() => undefined))
    return cids.map((cid, i) => [cid, blocks[i]])
  }

  /**
   * Tells the peers following `root` that we now hold these leaves. A peer that asked before we had
   * any (it got an empty HAVE, so index updates would mean nothing to it) gets the whole bitfield
   * first: without it, hosts that start together never learn what the others hold.
   */
  announce (root: CID, indices: number[]): void {
    const key = root.toString()
    for (const serving of this.serving) {
      if (!serving.interests.has(key)) continue
      if (!serving.described.has(key)) {
        serving.described.add(key)
        void this.haves(root).then(async have => { await serving.channel.send({ type: T.HAVE, ...have }) }).catch(() => {})
        continue
      }
      for (let i = 0; i < indices.length; i += MAX_LIST * 4) {
        void serving.channel.send({ type: T.HAVE, root, indices: indices.slice(i, i + MAX_LIST * 4) })
      }
    }
  }

  async stop (): Promise<void> {
    for (const serving of this.serving) serving.channel.abort(new Error('server stopping'))
    this.serving.clear()
  }
}
