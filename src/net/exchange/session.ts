import { Bitfield } from './bitfield.js'
import { leafCid, leafCidBytes, leafDigests, loadSkeleton, type Skeleton } from './skeleton.js'
import { Priority, T, type Message } from './messages.js'
import { blockId, verifyBlock } from '../../dag/hash.js'
import { decompressBlock } from '../../dag/wire.js'
import { MAX_BLOCK_SIZE } from '../../dag/node.js'
import { CollectiveError, ExitCode } from '../../errors.js'
import type { PeerClient } from './client.js'
import type { Blockstore } from '../../store/blockstore.js'
import type { PullOptions, PullResult } from '../interface.js'
import type { CID } from 'multiformats/cid'

export class NoProvidersError extends CollectiveError {
  static readonly code = 'ERR_NO_PROVIDERS'
  override readonly name = 'NoProvidersError'
  constructor (message: string) { super(message, NoProvidersError.code, ExitCode.NotFound) }
}

export interface SessionInit {
  /**
   * The most bytes requested from one peer and not yet received. @default 8 MiB. Below it, each
   * peer's window follows what it delivers: about WINDOW_SECONDS of its measured rate, so a slow or
   * shared source is never committed to much more than it sends in that time, and the blocks asked
   * of it are chosen with fresh knowledge of what other peers hold.
   */
  window?: number
  /** A request older than this is re-issued to another peer. @default 10 s */
  requestTimeout?: number
  /** Consecutive timeouts after which a peer is no longer asked. @default 3 */
  maxTimeouts?: number
  /** Give up when no peer can serve a missing block for this long. @default 30 s */
  findTimeout?: number
  /**
   * No new requests while this many bytes of verified blocks wait to be written to the store (its
   * writes and syncs compete with the network for the event loop): what a pull holds in memory is
   * bounded by it plus the peers' windows. Small on purpose: blocks that wait long enough to survive
   * a few scavenges are promoted to V8's old space, and every 5 MB promoted costs a mark-compact of
   * the whole heap (a 1 GiB pull on loopback: 22 of them at 32 MiB, 4 at 4 MiB, and a third less
   * CPU). @default 4 MiB
   */
  maxUnstored?: number
}

export interface SessionHost {
  store: Blockstore
  /** Clients of the peers that may hold the root (already asked with INTEREST). */
  clients(): PeerClient[]
  /** A peer sent a block that does not match its CID: disconnect and ignore it. */
  ban(client: PeerClient, reason: string): void
  /** We now hold these leaves: tell the peers following the root. */
  announce(root: CID, indices: number[]): void
  /** We hold part of the root and can serve it (DHT provider record); see PROVIDE_AFTER_MS. */
  provide(root: CID): void
  /** Debug log (DEBUG=collective:*): the session's state once a second. */
  log?(message: string): void
}

const DEFAULTS = { window: 8 * 1024 * 1024, requestTimeout: 10_000, maxTimeouts: 3, findTimeout: 30_000, maxUnstored: 4 * 1024 * 1024 }
/**
 * Verified blocks are stored at this many bytes, and on every tick. Small: a block that waits longer
 * than a few scavenges is promoted to V8's old space and costs a mark-compact (a host of the fan-out
 * receiving 2.5 MiB/s held its blocks until the 200 ms tick at 1 MiB; at 256 KiB, N = 16 took
 * 2.19-2.20x ideal and 92-93 CPU-s, at 1 MiB 2.37-2.38x and 98-100 CPU-s; at 64 KiB 2.56x: too many
 * small writes).
 */
const FLUSH_BYTES = 256 * 1024
/**
 * Stored leaves are announced to peers at most this often (ms). Every HAVE goes to every peer that
 * follows the root: 16 hosts flushing every 200 ms sent each other ~2 400 HAVEs a second.
 */
const ANNOUNCE_MS = 500
/** A peer's window is this many seconds of its delivery rate (clamped to MIN_WINDOW..window). */
const WINDOW_SECONDS = 0.25
const MIN_WINDOW = 1024 * 1024
/**
 * The floor for a peer whose blocks come one by one (incompressible, so not batched): nothing is
 * gained by asking it for much at a time, and with many slow peers 1 MiB each queues seconds of
 * data (16 peers at 20 Mbit/s: 7 s), which delays every HAVE and redirect behind it. At 256 KiB a
 * seed serving 16 hosts (each refilled at half its window) held ~3 MiB of wants, half a second of a
 * 50 Mbit/s link, and ran dry when the hosts' event loops lagged on a busy machine: the fan-out at
 * N = 16 took 1.39-1.52x ideal against 1.33-1.44x at 512 KiB (8 alternating runs each).
 */
const MIN_WINDOW_PLAIN = 512 * 1024
/**
 * The floor for a partial holder (a host still pulling, serving what it has). Every host of a swarm
 * asks each holder for a block as soon as it announces it, so the first holder of a block gets every
 * host's request for it; a deep queue there (512 KiB per host: 2.5 s of a 25 Mbit/s upload shared by
 * 15) holds requests that later holders, whose uploads sit idle, could have served. At 128 KiB (0.6 s)
 * the rest waits here until some holder has room: the fan-out at N = 16 kept its links 94–97 % busy
 * between 25 and 50 s instead of 92–95 %, the least busy host's upload 87–90 % instead of 59–76 %.
 */
const MIN_WINDOW_PARTIAL = 128 * 1024
/** A new peer's window, before its rate is known. */
const START_WINDOW = 1024 * 1024
const COMMIT_INTERVAL = 1_000
const COMMIT_BYTES = 16 * 1024 * 1024
const TICK = 200
/** Free window (bytes) at which a peer is sent more wants (a quarter of its window if smaller). */
const REFILL_AT = 1024 * 1024
/** Copies of one request allowed in endgame. */
const ENDGAME_COPIES = 2
/** A request younger than this is never duplicated in endgame (ms). */
const ENDGAME_AGE = 1_000
/**
 * The rarest-first order (what seeds are asked for) is rebuilt at most this often (ms) as HAVEs
 * change: a counting sort over the items, O(items), since holder counts are kept as HAVEs arrive.
 * Every 500 ms was tried: hosts of a fan-out then asked the publisher for more of the same blocks.
 */
const REBUILD_MS = 200
/** Blocks already fetched that a run of neighbours may step over (see extend). */
const RUN_SKIP = 8
/** A request waiting at a seed this long may move to a partial holder (see migrate), in ms. */
const MIGRATE_AGE = 300
/**
 * After a server answers ELSEWHERE (it sent the block lately to another peer), it is not asked for
 * that block again for this long (ms): meanwhile the peer that got it announces it and is asked.
 */
const REDIRECT_WAIT = 15_000
/**
 * A pull provides its root in the DHT (we hold part of it: others can find us) once it has stored
 * leaves and run this long, plus up to as long again at random (ms). A pull that ends sooner is
 * provided by the daemon when it pins the root. Every provide is a DHT query that asks every near
 * peer, and each of them merges the peers it hears of into libp2p's peer store: hosts that start
 * pulling one root together (after an announcement) and provide it in the same seconds slow each
 * other down. In the fan-out at N = 16 (16 hosts, 2 cores), providing at the skeleton kept the links
 * at 5–20 % for the first 10 s; 10–20 s in, they dipped to 60–75 % for 10 s (1.27, 1.31× ideal);
 * 30–60 s in, no dip (1.25, 1.20×).
 */
const PROVIDE_AFTER_MS = 30_000
/** Window cost of a skeleton node (its size is unknown until it arrives; 128 links take ~5.5 KiB). */
const NODE_COST = 8 * 1024

function cost (item: { leaf: number, size: number }): number {
  return item.leaf < 0 ? NODE_COST : item.size
}

/**
 * The `at` of every item not asked of anyone yet: one empty list shared by all of them (a 1 GiB pull
 * has 58 000 items, most waiting), and never added to: `askOf` gives an item its own list first.
 * A list, not a Set: an item is asked of one peer but for endgame copies (at most ENDGAME_COPIES),
 * and a Set cost ~200 bytes per request (its table, and a new one when its last peer was deleted)
 * that lived as long as the request, long enough to be promoted.
 */
const NOBODY: readonly PeerState[] = []

/** Records that `item` is asked of `peer`. */
function askOf (item: Item, peer: PeerState): void {
  if (item.at === NOBODY) item.at = [peer]
  else if (!item.at.includes(peer)) (item.at as PeerState[]).push(peer)
}

/** Records that `item` is no longer asked of `peer`. */
function unask (item: Item, peer: PeerState): void {
  const i = item.at.indexOf(peer)
  if (i < 0) return
  if (item.at.length === 1) item.at = NOBODY
  else (item.at as PeerState[]).splice(i, 1)
}

/**
 * One block the pull needs. Created with every field set (the optional ones undefined): a field added
 * later gives the object a new hidden class, and items that took different paths (a skeleton node's
 * `waiter`, a leaf's `next`, `avoid` after ELSEWHERE) made every function that touches items
 * polymorphic. V8 then threw away its optimized code each time a new shape reached it: at N = 16,
 * ~130 deoptimizations per host per pull, each followed by a recompile.
 */
interface Item {
  /**
   * Made when first needed for a leaf (`cidOf`: a WANT, a check, the store) and dropped once the
   * leaf is done: a CID is ~430 bytes of heap, and items live as long as the pull. Skeleton nodes
   * keep theirs.
   */
  cid: CID | undefined
  id: string
  size: number
  /**
   * The leaf's index (its first, if the chunk repeats); -1 for the root and interior nodes (every
   * holder has those). A number, not a list: a 16 GiB pull has 920 000 items, alive all along, and
   * a list each was two more objects per item for every full GC to mark.
   */
  leaf: number
  /** Every index of a chunk at several places of the disk (rare); undefined for the others. */
  repeats: number[] | undefined
  state: 'pending' | 'inflight' | 'done'
  /** Peers it is asked of: NOBODY until the first (see askOf). */
  at: readonly PeerState[]
  /** Peers holding part of the root that hold it (kept as HAVEs arrive; seeds hold everything). */
  holders: number
  /** Some peer was asked for it at some point. */
  requested?: boolean
  /** Set for skeleton blocks: the bytes are needed to continue. */
  waiter?: (bytes: Uint8Array) => void
  /** The next leaf item in DAG order (the next distinct block of the disk this pull needs). */
  next?: Item
  /** Peers that answered ELSEWHERE for it, and until when they are not asked for it (Infinity: never again). */
  avoid?: Map<PeerState, number>
}

interface PeerState {
  client: PeerClient
  inflight: Map<string, { item: Item, sentAt: number }>
  inflightBytes: number
  window: number
  timeouts: number
  dropped: boolean
  /** Where its scan of the order stopped (seeds; back to 0 at each rebuild). */
  cursor: number
  /**
   * A peer holding part of the root: the leaves it announced that were not yet fetched, in the order
   * it announced them (its newest first are the swarm's rarest), and how far they were scanned.
   * A leaf skipped because it was in flight elsewhere comes back through `retry` if it fails there.
   */
  items: Item[]
  itemsAt: number
  /** The leaf last asked of it: the next request continues its run of DAG neighbours if it can. */
  last?: Item
  /** When this peer last delivered a block we asked for. */
  lastBlockAt: number
  /** Block bytes it delivered in zstd batches (BLOCKS), and one by one: batches want large WANTs. */
  batchedBytes: number
  plainBytes: number
  /** Bytes it delivered since the last tick, and its smoothed delivery rate (bytes/s; 0 until measured). */
  delivered: number
  rate: number
  /** It had requests outstanding for the whole of the last tick (a rate measured then means something). */
  busySince: number
  /** Requests we gave up on (timed out, or the peer was dropped) and cancelled: a copy may still be on the wire. */
  abandoned: Set<string>
}

/** One pull of one root: rarest first from many peers, endgame, deadlines, verify before store. */
export class PullSession {
  readonly root: CID
  readonly key: string
  private readonly host: SessionHost
  private readonly opts: typeof DEFAULTS
  private readonly signal?: AbortSignal
  private readonly onProgress?: PullOptions['onProgress']
  private skeleton?: Skeleton
  local?: Bitfield
  private provided = false
  private readonly provideAfter = PROVIDE_AFTER_MS * (1 + Math.random())
  private readonly items = new Map<string, Item>()
  private order: Item[] = []
  /** Leaf items in this session's rotation of DAG order (ties of rarity are broken by place here). */
  private base: Item[] = []
  /** The item of each leaf index (undefined: already local). */
  private leafItem: Array<Item | undefined> = []
  private retry: Item[] = []
  private readonly peers = new Map<string, PeerState>()
  private buffer: Array<{ cid: CID, bytes: Uint8Array, item: Item, id: string }> = []
  private bufferBytes = 0
  /** Bytes of verified blocks not yet written to the store (buffered, or in a flush waiting its turn). */
  private unstored = 0
  private flushing: Promise<void> = Promise.resolve()
  private failure?: Error
  private wakeup?: () => void
  private lastUseful = Date.now()
  private remaining = 0
  bytesFetched = 0
  wireBytes = 0
  blocksFetched = 0
  private bytesTotal = 0
  private readonly started = Date.now()
  private lastAdapt = Date.now()
  private ticks = 0
  private lastCommit = Date.now()
  private uncommitted = 0
  private bytesCommitted = 0
  /** Leaves stored and not yet announced, and when we last announced. */
  private unannounced: number[] = []
  private announcedAt = 0

  constructor (root: CID, host: SessionHost, init: SessionInit, options: PullOptions) {
    this.root = root
    this.key = root.toString()
    this.host = host
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(init).filter(([, v]) => v != null)), ...(options.findTimeout != null ? { findTimeout: options.findTimeout } : {}) }
    this.signal = options.signal
    this.onProgress = options.onProgress
  }

  async run (): Promise<PullResult> {
    const ticker = setInterval(() => { this.tick() }, TICK)
    try {
      const rootBytes = await this.fetchSkeletonBlocks([this.root])
      this.host.log?.(`pull ${this.key.slice(-8)}: root block after ${this.elapsed} ms`)
      const skeleton = await loadSkeleton(this.root, rootBytes[0]!, async cids => await this.fetchSkeletonBlocks(cids))
      this.skeleton = skeleton
      this.host.log?.(`pull ${this.key.slice(-8)}: skeleton (${skeleton.nodes.length} nodes) after ${this.elapsed} ms`)
      await this.flush()
      await this.fetchLeaves(skeleton)
      this.host.log?.(`pull ${this.key.slice(-8)}: all blocks after ${this.elapsed} ms`)
      await this.flush()
      await this.host.store.commit()
      this.host.log?.(`pull ${this.key.slice(-8)}: stored and committed after ${this.elapsed} ms`)
      return {
        root: this.root,
        size: skeleton.disk.size,
        // Distinct blocks, as an import counts them (a node or leaf may repeat).
        blocks: new Set(skeleton.nodes.map(n => blockId(n.cid))).size + 1 + skeleton.first.size,
        bytesFetched: this.bytesFetched,
        wireBytes: this.wireBytes,
        peers: [...this.peers.values()].filter(p => p.timeouts >= 0 && !p.dropped).length
      }
    } finally {
      clearInterval(ticker)
      for (const peer of this.peers.values()) {
        const pending = [...peer.inflight.values()].map(e => this.wantOf(e.item))
        if (pending.length > 0) void peer.client.cancel(pending).catch(() => {})
      }
    }
  }

  // ---- phases ----

  /** Gets blocks of the skeleton: local ones from the store, others from peers holding the root. */
  private async fetchSkeletonBlocks (cids: CID[]): Promise<Uint8Array[]> {
    const present = await this.host.store.hasMany(cids)
    // One wait per distinct node: identical regions of a disk (a long run of one non-zero byte, a
    // file stored twice) repeat a node's CID within a level, and its one item has one waiter.
    const waits = new Map<string, Promise<Uint8Array>>()
    return await Promise.all(cids.map(async (cid, i) => {
      if (present[i] === true) return await this.host.store.get(cid)
      const id = blockId(cid)
      let wait = waits.get(id)
      if (wait == null) {
        wait = new Promise<Uint8Array>((resolve) => {
          const item = this.addItem(cid, MAX_BLOCK_SIZE, -1, undefined, id)
          item.waiter = resolve
        })
        waits.set(id, wait)
      }
      return await wait
    }).map(p => this.guard(p)))
  }

  private async fetchLeaves (skeleton: Skeleton): Promise<void> {
    const local = new Bitfield(skeleton.count)
    const present = await this.host.store.hasDigests(leafDigests(skeleton), skeleton.ids)
    let have = 0
    let previous: Item | undefined
    for (let i = 0; i < skeleton.count; i++) {
      if (present[i] === true) {
        local.set(i)
        have++
        continue
      }
      // A chunk that repeats is one item, made at its first index, for all of them.
      const id = skeleton.ids[i]!
      if (skeleton.first.get(id) !== i) continue
      const item = this.addItem(undefined, skeleton.leafSizes[i]!, i, skeleton.repeats.get(id), id)
      if (previous != null) previous.next = item
      previous = item
    }
    this.leafItem = new Array(skeleton.count)
    const leaves: Item[] = []
    for (const item of this.items.values()) {
      if (item.leaf < 0 || item.state === 'done') continue
      leaves.push(item)
      if (item.repeats == null) this.leafItem[item.leaf] = item
      else for (const i of item.repeats) this.leafItem[i] = item
    }
    // A random rotation: hosts starting together begin at different places, and trade.
    const rotation = Math.floor(Math.random() * Math.max(1, leaves.length))
    this.base = leaves.slice(rotation).concat(leaves.slice(0, rotation))
    this.local = local
    this.bytesTotal = [...this.items.values()].filter(i => i.leaf >= 0).reduce((n, i) => n + i.size, 0)
    this.onProgress?.({ type: 'pull:start', root: this.key, size: skeleton.disk.size, blocks: skeleton.count, have })
    this.recount()
    this.rebuildOrder()
    this.schedule()
    this.host.log?.(`pull ${this.key.slice(-8)}: ${leaves.length} blocks to fetch (${have} leaves local), first requests after ${this.elapsed} ms`)
    await this.guard(new Promise<void>(resolve => {
      const check = (): void => { if (this.remaining === 0) resolve(); else this.wakeup = check }
      check()
    }))
  }

  /** The item's CID, made from the skeleton for a leaf that has none now (see Item.cid). */
  private cidOf (item: Item): CID {
    return item.cid ?? (item.cid = leafCid(this.skeleton!, item.leaf))
  }

  /**
   * The item's CID for a WANT: a leaf's is a view of its 36 bytes in the skeleton. A CID object made
   * at the request lived until the block arrived, a window later: long enough to be promoted to the
   * old generation, ~260 bytes per block that every scavenge copied on the way.
   */
  private wantOf (item: Item): CID | Uint8Array {
    return item.cid ?? leafCidBytes(this.skeleton!, item.leaf)
  }

  /** A skeleton node (its CID given) or a leaf (its CID made when needed, from its first index). */
  private addItem (cid: CID | undefined, size: number, leaf: number, repeats: number[] | undefined, id = blockId(cid!)): Item {
    let item = this.items.get(id)
    if (item == null) {
      // Every field from the start, so that every item has one hidden class (see Item).
      item = { cid, id, size, leaf, repeats, state: 'pending', at: NOBODY, holders: 0, requested: false, waiter: undefined, next: undefined, avoid: undefined }
      this.items.set(id, item)
      this.order.push(item)
      this.remaining++
      this.schedule()
    }
    return item
  }

  /** Races a phase against abort and failure (no provider, store error); never outlives either. */
  private async guard<T> (promise: Promise<T>): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      let failed: ReturnType<typeof setInterval> | undefined
      const settle = (fn: () => void): void => {
        clearInterval(failed)
        this.signal?.removeEventListener('abort', onAbort)
        fn()
      }
      const onAbort = (): void => { settle(() => { reject(new CollectiveError('pull aborted', 'ERR_ABORTED', 130)) }) }
      if (this.signal?.aborted === true) { onAbort(); return }
      this.signal?.addEventListener('abort', onAbort, { once: true })
      // The phase may wait forever for a block nobody has: the failure check must not wait for it.
      failed = setInterval(() => { if (this.failure != null) settle(() => { reject(this.failure) }) }, 50)
      promise.then(value => { settle(() => { resolve(value) }) }, err => { settle(() => { reject(err) }) })
    })
  }

  // ---- peers ----

  private peerState (client: PeerClient): PeerState {
    let state = this.peers.get(client.key)
    if (state == null) {
      state = { client, inflight: new Map(), inflightBytes: 0, window: Math.min(START_WINDOW, this.opts.window), timeouts: 0, dropped: false, cursor: 0, items: [], itemsAt: 0, last: undefined, batchedBytes: 0, plainBytes: 0, lastBlockAt: Date.now(), abandoned: new Set(), delivered: 0, rate: 0, busySince: 0 }
      this.peers.set(client.key, state)
    }
    return state
  }

  private has (peer: PeerState, item: Item): boolean {
    const have = peer.client.haves.get(this.key)
    if (have == null) return false
    if (have.all) return true
    if (have.bitfield == null) return false
    if (item.leaf < 0) return true
    return this.holds(have.bitfield, item)
  }

  /** Whether a partial holder's bitfield has one of the item's leaves (false if it does not fit the root). */
  private holds (bits: Bitfield, item: Item): boolean {
    if (this.skeleton != null && bits.size !== this.skeleton.count) return false
    if (item.repeats == null) return bits.has(item.leaf)
    for (const i of item.repeats) if (bits.has(i)) return true
    return false
  }

  /** The bitfield of a peer holding part of the root (undefined for a seed, or a peer that said nothing). */
  private partialBits (peer: PeerState): Bitfield | undefined {
    const have = peer.client.haves.get(this.key)
    return have == null || have.all ? undefined : have.bitfield
  }

  /**
   * Counts every item's partial holders again and lists each partial holder's items: when a peer
   * comes, goes, sends a whole bitfield, becomes a seed or withdraws its HAVE (O(items × peers)).
   */
  private recount (): void {
    if (this.skeleton == null) return
    const partial: Array<[PeerState, Bitfield]> = []
    for (const peer of this.peers.values()) {
      peer.items = []
      peer.itemsAt = 0
      const bits = this.partialBits(peer)
      if (bits != null && !peer.dropped) partial.push([peer, bits])
    }
    for (const item of this.base) {
      item.holders = 0
      if (item.state === 'done') continue
      for (const [peer, bits] of partial) {
        if (!this.holds(bits, item)) continue
        item.holders++
        peer.items.push(item)
      }
    }
    this.orderStale = true
  }

  /** A partial holder announced new leaves: count it as their holder and list them for it. */
  private added (peer: PeerState, fresh: number[]): void {
    const bits = this.partialBits(peer)
    if (bits == null || peer.dropped) return
    for (const i of fresh) {
      const item = this.leafItem[i]
      if (item == null || item.state === 'done') continue
      // A block at several places of the disk: counted once per peer (recounted, it is rare).
      if (item.repeats != null) {
        item.holders = 0
        for (const p of this.peers.values()) {
          const b = this.partialBits(p)
          if (b != null && !p.dropped && this.holds(b, item)) item.holders++
        }
      } else item.holders++
      peer.items.push(item)
    }
    this.orderStale = true
  }

  /**
   * Whether `peer` may be asked for `item` now: it holds it, and did not redirect us elsewhere for it
   * (ELSEWHERE), or did but no partial holder has it REDIRECT_WAIT later.
   */
  private usable (peer: PeerState, item: Item, now: number): boolean {
    const until = item.avoid?.get(peer)
    if (until != null && (until > now || item.holders > 0)) return false
    return this.has(peer, item)
  }

  /**
   * A peer's HAVE for our root arrived or changed: `fresh` lists the leaves it added to its bitfield;
   * without it, everything it holds is looked at again.
   */
  onHave (client: PeerClient, fresh?: number[]): void {
    const peer = this.peerState(client)
    if (fresh != null) this.added(peer, fresh)
    else this.recount()
    this.schedule()
  }

  onPeerClosed (client: PeerClient): void {
    const peer = this.peers.get(client.key)
    if (peer == null) return
    this.release(peer)
    this.peers.delete(client.key)
    this.recount()
    this.schedule()
  }

  private release (peer: PeerState): void {
    for (const { item } of peer.inflight.values()) this.unassign(peer, item)
    this.abandon(peer, [...peer.inflight.values()].map(e => e.item))
    peer.inflight.clear()
    peer.inflightBytes = 0
  }

  /** Cancels requests we stopped waiting for; a copy already on the wire is then not "unsolicited". */
  private abandon (peer: PeerState, items: Item[]): void {
    if (items.length === 0 || peer.client.closed) return
    for (const item of items) peer.abandoned.add(item.id)
    void peer.client.cancel(items.map(i => this.wantOf(i))).catch(() => {})
  }

  private unassign (peer: PeerState, item: Item): void {
    unask(item, peer)
    if (item.state === 'inflight' && item.at.length === 0) {
      item.state = 'pending'
      this.retry.push(item)
    }
  }

  /** Handles BLOCK and DONT_HAVE from a peer; returns false when the block was not for us. */
  onMessage (client: PeerClient, message: Message): boolean {
    const peer = this.peers.get(client.key)
    if (peer == null) return false
    if (message.type === T.DONT_HAVE) {
      for (const cid of message.cids) {
        const entry = peer.inflight.get(blockId(cid))
        if (entry == null) continue
        peer.inflight.delete(entry.item.id)
        peer.inflightBytes -= cost(entry.item)
        this.unassign(peer, entry.item)
      }
      // It said it had the root but lacks blocks of it: stop trusting its HAVE.
      client.haves.delete(this.key)
      this.recount()
      this.schedule()
      return true
    }
    if (message.type === T.ELSEWHERE) {
      this.onElsewhere(peer, message.cids)
      return true
    }
    if (message.type !== T.BLOCK) return false
    const id = blockId(message.cid)
    let entry = peer.inflight.get(id)
    if (entry == null && peer.abandoned.delete(id)) {
      // The answer to a request we timed out (and cancelled): still a block we may need.
      const late = this.items.get(id)
      if (late == null || late.state === 'done') return true
      entry = { item: late, sentAt: 0 }
    } else if (entry == null) {
      // A late endgame copy (cancelled after another peer delivered) is benign; anything else is not ours.
      return this.items.get(id)?.state === 'done'
    } else {
      peer.inflight.delete(id)
      peer.inflightBytes -= cost(entry.item)
    }
    const item = entry.item
    unask(item, peer)
    let bytes: Uint8Array
    try {
      bytes = message.compressed ? decompressBlock(message.data, Math.min(item.size, MAX_BLOCK_SIZE)) : message.data
    } catch {
      this.host.ban(client, `undecodable compressed block ${message.cid}`)
      this.unassign(peer, item)
      return true
    }
    if ((item.leaf >= 0 && bytes.length !== item.size) || !verifyBlock(this.cidOf(item), bytes)) {
      this.host.ban(client, `block ${message.cid} does not match its hash`)
      this.unassign(peer, item)
      this.schedule()
      return true
    }
    peer.timeouts = 0
    peer.lastBlockAt = Date.now()
    peer.delivered += bytes.length
    if (message.wire != null) peer.batchedBytes += bytes.length
    else peer.plainBytes += bytes.length
    this.lastUseful = Date.now()
    if (item.state !== 'done') {
      item.state = 'done'
      this.remaining--
      this.blocksFetched++
      this.bytesFetched += bytes.length
      this.wireBytes += message.wire ?? message.data.length
      // Endgame duplicates: the other copies are no longer needed.
      for (const other of item.at) {
        other.inflight.delete(id)
        other.inflightBytes -= cost(item)
        void other.client.cancel([this.cidOf(item)]).catch(() => {})
      }
      // Dropped, not cleared: a done item lives as long as the pull, and its list would too.
      item.at = NOBODY
      // Not copied: a frame's payload is its own buffer, or a view of a decrypted message nobody reuses.
      const copy = bytes
      this.buffer.push({ cid: this.cidOf(item), bytes: copy, item, id })
      if (item.leaf >= 0) item.cid = undefined
      this.bufferBytes += copy.length
      this.unstored += copy.length
      item.waiter?.(copy)
      if (this.bufferBytes >= FLUSH_BYTES) void this.flush()
      if (this.remaining === 0) this.wakeup?.()
    }
    this.schedule()
    return true
  }

  /**
   * The server sent these blocks lately to another peer: ask whoever announces them, and this server
   * again only after REDIRECT_WAIT (it serves a block it redirected us for once). A server that
   * redirects us twice for one block is not asked for it again.
   */
  private onElsewhere (peer: PeerState, cids: CID[]): void {
    const now = Date.now()
    for (const cid of cids) {
      const id = blockId(cid)
      const entry = peer.inflight.get(id)
      // Also when no longer asked of it (moved elsewhere): it would serve the block if asked again.
      const item = entry?.item ?? this.items.get(id)
      if (item == null || item.state === 'done') continue
      item.avoid ??= new Map()
      item.avoid.set(peer, item.avoid.has(peer) ? Infinity : now + REDIRECT_WAIT)
      if (entry == null) continue
      peer.inflight.delete(id)
      peer.inflightBytes -= cost(item)
      // Back through retry, which every peer looks at first: whoever holds it is asked.
      this.unassign(peer, item)
    }
    this.schedule()
  }

  // ---- scheduling ----

  /**
   * Rarest first, for seeds: items not yet fetched by how many partial holders hold them (skeleton
   * nodes first), ties in the session's rotation. A counting sort: O(items), holders being counted
   * as HAVEs arrive.
   */
  private rebuildOrder (): void {
    this.orderStale = false
    this.rebuiltAt = Date.now()
    const skeleton = this.order.filter(i => i.leaf < 0 && i.state !== 'done')
    let live = 0
    let top = 0
    for (const item of this.base) {
      if (item.state === 'done') continue
      this.base[live++] = item
      if (item.holders > top) top = item.holders
    }
    this.base.length = live
    const starts = new Array<number>(top + 2).fill(0)
    for (const item of this.base) starts[item.holders + 1]!++
    for (let h = 1; h <= top + 1; h++) starts[h]! += starts[h - 1]!
    const order = new Array<Item>(skeleton.length + live)
    for (let i = 0; i < skeleton.length; i++) order[i] = skeleton[i]!
    for (const item of this.base) order[skeleton.length + starts[item.holders]!++] = item
    this.order = order
    for (const peer of this.peers.values()) peer.cursor = 0
  }

  private pick (peer: PeerState, now: number): Item | undefined {
    while (this.retry.length > 0 && this.retry[0]!.state !== 'pending') this.retry.shift()
    for (let i = 0; i < this.retry.length; i++) {
      const item = this.retry[i]!
      if (item.state === 'pending' && this.usable(peer, item, now)) {
        this.retry.splice(i, 1)
        return item
      }
    }
    const next = this.extend(peer, now)
    if (next != null) return next
    if (this.partialBits(peer) != null && this.skeleton != null) {
      // What it announced, in order; what was in flight elsewhere then comes back through retry.
      while (peer.itemsAt < peer.items.length) {
        const item = peer.items[peer.itemsAt++]!
        if (item.state === 'pending' && this.usable(peer, item, now)) return item
      }
      if (peer.itemsAt > 0) {
        peer.items = []
        peer.itemsAt = 0
      }
      return undefined
    }
    for (; peer.cursor < this.order.length; peer.cursor++) {
      const item = this.order[peer.cursor]!
      if (item.state === 'pending' && this.usable(peer, item, now)) return item
    }
    return undefined
  }

  /**
   * Continues the run of DAG neighbours last asked of this peer: its answer is compressed a batch at a
   * time, and neighbouring blocks share context (an update's blocks: 3 % fewer bytes on the wire).
   * Rarest first still chooses where each run starts; a run stops at a block another peer was asked
   * for, or one this peer lacks.
   */
  private extend (peer: PeerState, now: number): Item | undefined {
    let item = peer.last?.next
    for (let skipped = 0; item != null && item.state === 'done' && skipped < RUN_SKIP; skipped++) item = item.next
    if (item == null || item.state !== 'pending' || !this.usable(peer, item, now)) return undefined
    return item
  }

  /** Endgame: everything is requested; ask an idle peer for blocks still in flight elsewhere. */
  private pickEndgame (peer: PeerState, now: number): Item | undefined {
    for (const item of this.order) {
      if (item.state !== 'inflight' || item.at.length >= ENDGAME_COPIES || item.at.includes(peer) || !this.usable(peer, item, now)) continue
      // Only a request its peer is late with: a copy of one about to arrive is upload wasted (in a
      // fan-out, mostly the source's, which every host would ask for its last blocks).
      if (!this.late(item, now)) continue
      return item
    }
    return undefined
  }

  /** In flight longer than its peer's window takes to deliver, with a margin (and at least ENDGAME_AGE). */
  private late (item: Item, now: number): boolean {
    for (const holder of item.at) {
      const sentAt = holder.inflight.get(item.id)?.sentAt ?? 0
      const expected = holder.rate > 0 ? 2 * holder.window / holder.rate * 1000 : 0
      if (now - sentAt < Math.max(ENDGAME_AGE, expected)) return false
    }
    return true
  }

  private scheduled = false
  private orderStale = false
  private rebuiltAt = 0

  private schedule (): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      this.fill()
    })
  }

  private fill (): void {
    // The store is behind: ask for nothing more until it catches up (SessionInit.maxUnstored).
    if (this.unstored >= this.opts.maxUnstored) return
    if (this.orderStale && Date.now() - this.rebuiltAt >= REBUILD_MS) this.rebuildOrder()
    // Top a peer up only once a good part of its window is free: one WANT of many CIDs instead of
    // a WANT (a frame, a write, a window update) per block delivered. Emptiest first.
    const peers: PeerState[] = []
    for (const p of this.peers.values()) {
      if (p.dropped || p.client.closed) continue
      if (p.inflight.size > 0 && this.windowOf(p) - p.inflightBytes < Math.min(this.windowOf(p) / 2, REFILL_AT)) continue
      peers.push(p)
    }
    if (peers.length === 0) return
    if (peers.length > 1) peers.sort((a, b) => a.inflightBytes - b.inflightBytes)
    // Whether it is endgame: found once per fill, not once per peer that has nothing to give.
    let endgame: boolean | undefined
    const now = Date.now()
    for (const peer of peers) {
      const batch: Array<CID | Uint8Array> = []
      const priority = this.skeleton == null ? Priority.Demand : Priority.Background
      const window = this.windowOf(peer)
      while (peer.inflightBytes < window) {
        const item = this.pick(peer, now) ?? ((endgame ??= !this.anyPending()) ? this.pickEndgame(peer, now) : undefined)
        if (item == null) break
        item.state = 'inflight'
        item.requested = true
        askOf(item, peer)
        if (item.leaf >= 0) peer.last = item
        peer.inflight.set(item.id, { item, sentAt: now })
        peer.inflightBytes += cost(item)
        batch.push(this.wantOf(item))
      }
      if (batch.length > 0) void peer.client.want(batch, priority).catch(() => {})
    }
  }

  /**
   * What may be asked of a peer at once. While the skeleton loads, its whole window: each level of
   * interior nodes is asked for together, and the pull waits for all of it before asking for leaves.
   */
  private windowOf (peer: PeerState): number {
    return this.skeleton == null ? Math.max(peer.window, this.opts.window) : peer.window
  }

  /** Whether anything is left to request (stops at the first: the order puts requested ones first). */
  private anyPending (): boolean {
    for (const item of this.retry) if (item.state === 'pending') return true
    for (const item of this.order) if (item.state === 'pending') return true
    return false
  }

  private pending (): number {
    let n = this.retry.filter(i => i.state === 'pending').length
    for (const item of this.order) if (item.state === 'pending') n++
    return n
  }

  /**
   * Moves requests still waiting at a seed to a partial holder that has announced the block since
   * and has room in its window; the seed is sent CANCEL, and so never sends it if it had not yet.
   * Hosts cannot see each other's requests, only what they store: two that asked the seed for the
   * same block at about the same time would otherwise both get it from the seed (in a fan-out, the
   * publisher, whose upload is the swarm's scarce link; most of its duplicates were such pairs).
   */
  private migrate (now: number): void {
    const peers = [...this.peers.values()].filter(p => !p.dropped && !p.client.closed)
    const isSeed = (p: PeerState): boolean => p.client.haves.get(this.key)?.all === true
    const partial = peers.filter(p => !isSeed(p))
    if (partial.length === 0 || this.skeleton == null) return
    for (const seed of peers) {
      if (!isSeed(seed)) continue
      const moved: Item[] = []
      const wants = new Map<PeerState, Array<CID | Uint8Array>>()
      for (const [id, { item, sentAt }] of seed.inflight) {
        if (item.leaf < 0 || item.at.length !== 1 || now - sentAt < MIGRATE_AGE) continue
        // The holder with the most room, so moves spread over the partial holders.
        let to: PeerState | undefined
        for (const p of partial) {
          const room = p.window - p.inflightBytes - cost(item)
          if (room >= 0 && (to == null || room > to.window - to.inflightBytes - cost(item)) && this.usable(p, item, now)) to = p
        }
        if (to == null) continue
        seed.inflight.delete(id)
        seed.inflightBytes -= cost(item)
        unask(item, seed)
        moved.push(item)
        askOf(item, to)
        to.inflight.set(id, { item, sentAt: now })
        to.inflightBytes += cost(item)
        const list = wants.get(to)
        if (list != null) list.push(this.wantOf(item))
        else wants.set(to, [this.wantOf(item)])
      }
      // A copy the seed sends anyway is still taken (abandoned, not unsolicited).
      this.abandon(seed, moved)
      for (const [to, cids] of wants) void to.client.want(cids, Priority.Background).catch(() => {})
    }
  }

  /** Deadlines, progress, periodic store flushes, the DHT provide and the no-provider timeout. */
  private tick (): void {
    const now = Date.now()
    if (!this.provided && this.local != null && this.local.count > 0 && now - this.started >= this.provideAfter) {
      this.provided = true
      this.host.provide(this.root)
    }
    if (this.bufferBytes > 0) void this.flush().catch(() => {})
    else this.announce()
    for (const peer of this.peers.values()) this.adapt(peer, now)
    this.lastAdapt = now
    for (const peer of this.peers.values()) {
      // A peer answers in order: while it keeps delivering, requests queued behind others are not late
      // (at 2 Mbit/s, a 4 MiB window takes 17 s to drain). Only a peer that delivered nothing for
      // requestTimeout has its requests moved elsewhere, and cancelled.
      const expiredItems: Item[] = []
      for (const [id, { item, sentAt }] of peer.inflight) {
        if (now - Math.max(sentAt, peer.lastBlockAt) < this.opts.requestTimeout) continue
        peer.inflight.delete(id)
        peer.inflightBytes -= cost(item)
        this.unassign(peer, item)
        expiredItems.push(item)
      }
      const expired = expiredItems.length > 0
      if (expired && !peer.dropped) this.abandon(peer, expiredItems)
      if (expired) {
        peer.timeouts++
        peer.window = Math.max(MIN_WINDOW_PLAIN, peer.window / 2)
        peer.rate /= 2
        if (peer.timeouts >= this.opts.maxTimeouts && !peer.dropped) {
          peer.dropped = true
          this.release(peer)
          this.recount()
          this.onProgress?.({ type: 'pull:peer-dropped', peer: peer.client.key, reason: 'too slow' })
        }
      }
    }
    this.migrate(now)
    if (this.remaining > 0 && now - this.lastUseful > this.opts.findTimeout) {
      const usable = [...this.peers.values()].filter(p => !p.dropped && p.client.haves.has(this.key)).length
      this.failure = new NoProvidersError(usable === 0
        ? `no peer provides ${this.key} (waited ${Math.round(this.opts.findTimeout / 1000)} s)`
        : `no progress on ${this.key} for ${Math.round(this.opts.findTimeout / 1000)} s (${this.remaining} blocks missing)`)
    }
    if (this.host.log != null && ++this.ticks % 5 === 0) {
      const peers = [...this.peers.values()].map(p => `${p.client.key.slice(-6)}:${p.inflight.size}/${Math.round(p.window / 1024)}K@${Math.round(p.rate / 1024)}K${p.dropped ? ':dropped' : ''}${p.client.haves.has(this.key) ? '' : ':nohave'}`)
      this.host.log(`pull ${this.key.slice(-8)}: ${this.remaining} left, ${this.pending()} pending, ${this.retry.length} retry; ${peers.join(' ')}`)
    }
    this.onProgress?.({
      type: 'pull:progress',
      root: this.key,
      blocksFetched: this.blocksFetched,
      bytesFetched: this.bytesFetched,
      bytesCommitted: this.bytesCommitted,
      blocksTotal: this.items.size,
      bytesTotal: this.bytesTotal,
      peers: [...this.peers.values()].filter(p => !p.dropped && p.client.haves.has(this.key)).length
    })
    this.schedule()
  }

  /**
   * Sizes a peer's window from what it delivered in the last tick, if it was asked for blocks all
   * along (an idle peer's rate says nothing). Window-limited, a fast peer's measured rate is window /
   * round trip, so its window grows until WINDOW_SECONDS of queueing at the peer; a slow one shrinks.
   */
  private adapt (peer: PeerState, now: number): void {
    const busy = peer.inflight.size > 0
    if (busy && peer.busySince > 0 && now - peer.busySince >= TICK) {
      const measured = peer.delivered * 1000 / (now - this.lastAdapt)
      peer.rate = peer.rate === 0 ? measured : 0.6 * peer.rate + 0.4 * measured
      const floor = peer.batchedBytes >= peer.plainBytes ? MIN_WINDOW : this.partialBits(peer) != null ? MIN_WINDOW_PARTIAL : MIN_WINDOW_PLAIN
      peer.window = Math.round(Math.min(this.opts.window, Math.max(floor, peer.rate * WINDOW_SECONDS)))
    }
    peer.busySince = busy ? (peer.busySince || now) : 0
    peer.delivered = 0
  }

  /** Stores verified blocks, then announces the new leaves. */
  async flush (): Promise<void> {
    const batch = this.buffer
    this.buffer = []
    this.bufferBytes = 0
    // Not after the previous flush: the store writes this batch while that one's write is in flight.
    const previous = this.flushing
    const job = (async () => {
      if (batch.length === 0) return
      const bytes = batch.reduce((n, b) => n + b.bytes.length, 0)
      // The store takes the blocks (handOver): what is needed of them afterwards is kept apart.
      const items = batch.map(b => b.item)
      try {
        await this.host.store.putMany(batch, { trusted: true, fresh: true, handOver: true })
      } finally {
        this.unstored -= bytes
        if (this.unstored < this.opts.maxUnstored) this.schedule()
      }
      this.uncommitted += bytes
      // Commit (fdatasync + index) once a second or every 16 MiB: a killed pull loses at most that much.
      if (Date.now() - this.lastCommit >= COMMIT_INTERVAL || this.uncommitted >= COMMIT_BYTES) {
        this.lastCommit = Date.now()
        const bytes = this.uncommitted
        this.uncommitted = 0
        // In the background: the next batches are written while the disk syncs.
        void this.host.store.commitInBackground().then(() => {
          this.bytesCommitted += bytes
        }, err => { this.failure ??= err })
      }
      if (this.local == null || this.skeleton == null) return
      for (const item of items) {
        if (item.leaf < 0) continue
        if (item.repeats == null) {
          if (this.local.set(item.leaf)) this.unannounced.push(item.leaf)
        } else for (const i of item.repeats) if (this.local.set(i)) this.unannounced.push(i)
      }
      // Announced at most every ANNOUNCE_MS (each HAVE goes to every peer following the root), and
      // at once when the pull is complete.
      this.announce(this.remaining === 0)
    })()
    job.catch(err => { this.failure ??= err })
    this.flushing = Promise.all([previous, job.catch(() => {})]).then(() => {})
    await job
    // Resolves once every earlier flush is done too.
    await previous
  }

  /** Tells the peers following the root of the leaves stored since the last time, if ANNOUNCE_MS passed (or `now`). */
  private announce (now = false): void {
    if (this.unannounced.length === 0 || (!now && Date.now() - this.announcedAt < ANNOUNCE_MS)) return
    this.host.announce(this.root, this.unannounced)
    this.unannounced = []
    this.announcedAt = Date.now()
  }

  /** Whether this pull asked a peer for the block (it may still arrive after the pull ended). */
  asked (cid: CID): boolean {
    const item = this.items.get(blockId(cid))
    return item?.requested === true
  }

  get elapsed (): number { return Date.now() - this.started }
}
