import { setMaxListeners } from 'node:events'
import { PeerClient } from './client.js'
import { BlockServer } from './server.js'
import { PullSession, type SessionInit } from './session.js'
import { DemandFetcher } from './demand.js'
import { leafDigests, loadSkeleton } from './skeleton.js'
import { Bitfield } from './bitfield.js'
import { PROTOCOL, T, type Message } from './messages.js'
import { ProtocolError } from './frames.js'
import type { BlockExchange, ExchangeComponents, FetchOptions, PullOptions, PullResult, TransferStats } from '../interface.js'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

export { PROTOCOL } from './messages.js'
export { NoProvidersError } from './session.js'
export { ProtocolError } from './frames.js'

export interface ExchangeInit extends SessionInit {
  /** Offer and accept DEFLATE-compressed blocks on the wire. @default true */
  compression?: boolean
  /** Inbound block streams per connection (one is enough; a second lets a peer reconnect). @default 4 */
  maxInboundStreams?: number
  /** Blocks a peer may send that nobody asked for before it is banned. @default 16 */
  maxUnsolicited?: number
  /** How long a banned peer stays banned (ms). @default 1 hour */
  banTime?: number
  /** Log sink (the daemon routes it to DEBUG=collective:*). */
  log?(message: string): void
}

const HAVE_CACHE_MS = 5_000
/**
 * How long blocks of a finished pull still count as asked for: when a pull ends, copies already on
 * the wire (endgame duplicates, wants queued at a peer before our CANCEL reached it) keep arriving,
 * and an honest peer must not be banned for them.
 */
const FINISHED_GRACE_MS = 30_000
const DHT_RETRY_MS = 5_000
/** The longest wait between two provider searches of one pull (they back off from DHT_RETRY_MS). */
const DHT_RETRY_MAX_MS = 60_000
/**
 * A pull whose connected peers include a seed (it answered INTEREST with HAVE all within
 * SEED_ANSWER_MS) searches the DHT for more providers only this long after it started, and at once if
 * no seed stays connected. Hosts that start pulling the same root together (after an announcement)
 * otherwise spend the first seconds of the pull, when nothing else can flow yet, answering each
 * other's DHT queries: at N = 16 on the fan-out bench the swarm's links sat at 5–20 % for 10 s.
 */
const DHT_SEEDED_WAIT_MS = 10_000
const SEED_ANSWER_MS = 1_000
/**
 * A search is skipped while this many connected peers hold the root, whole or in part: the swarm
 * around us is found, and every further search costs each peer it asks.
 */
const ENOUGH_HOLDERS = 8
/** Connected peers we hold no block stream to are asked again this often during a pull. */
const REASK_MS = 2_000

class Exchange implements BlockExchange {
  private readonly components: ExchangeComponents
  private readonly init: ExchangeInit
  private readonly server: BlockServer
  private readonly clients = new Map<string, PeerClient>()
  private readonly opening = new Map<string, Promise<PeerClient | undefined>>()
  /** Roots provided in the DHT by this process. */
  private readonly provided = new Set<string>()
  private readonly interested = new Map<string, Set<string>>()
  private readonly sessions = new Map<string, PullSession>()
  /** Pulls that ended less than FINISHED_GRACE_MS ago: late copies of their blocks are benign. */
  private readonly finished = new Map<string, PullSession>()
  private readonly running = new Map<string, Promise<PullResult>>()
  private readonly banned = new Map<string, number>()
  private readonly unsolicited = new Map<string, number>()
  private readonly haveCache = new Map<string, { at: number, generation: number, all: boolean, have: ReturnType<Exchange['storeHave']> }>()
  private readonly perPeer = new Map<string, { bytesSent: number, bytesReceived: number }>()
  private counters = { bytesSent: 0, bytesReceived: 0, blocksSent: 0, blocksReceived: 0 }
  private rateMark = { at: Date.now(), sent: 0, received: 0, sendRate: 0, receiveRate: 0 }
  private readonly demand: DemandFetcher
  /** DHT searches for roots a demand fetch needs providers of, shared by concurrent fetches. */
  private readonly demandDiscovery = new Map<string, { controller: AbortController, users: number }>()
  /**
   * A peer that connects gets our block stream (and HELLO) at once, not at the first pull: a pull then
   * starts with one INTEREST per peer. In the fan-out (N = 16), opening 16 streams per host when all
   * pulls start together on 2 cores put the root block 0.85-1.1 s after the pull; 0.33-0.41 s with
   * the streams open.
   */
  private readonly onConnect = (event: CustomEvent<PeerId>): void => {
    if (this.sessions.size === 0) void this.client(event.detail)
    for (const session of this.sessions.values()) void this.ask(event.detail, session.root)
  }

  constructor (components: ExchangeComponents, init: ExchangeInit = {}) {
    this.components = components
    this.init = init
    this.server = new BlockServer(components.blockstore, async root => await this.localHave(root), {
      onSent: (peer, bytes) => {
        this.counters.bytesSent += bytes
        this.counters.blocksSent++
        this.peerCounter(peer).bytesSent += bytes
      },
      // A peer that sends bad data is dropped, whichever side of the exchange it is on.
      onViolation: (peer, err) => { this.ban(peer, `${err.message} (on its block stream to us)`) },
      // Only a host that is not pulling redirects: a seed's upload is what a swarm lacks; a host
      // still downloading serves what it has, and redirects would only send askers round in circles.
      redirects: () => this.sessions.size === 0
    })
    this.server.compression = init.compression ?? true
    this.demand = new DemandFetcher({
      store: components.blockstore,
      candidates: async (root, signal) => await this.demandCandidates(root, signal),
      ban: (client, reason) => { this.ban(client.peer, reason, client) }
    })
  }

  private log (message: string): void { this.init.log?.(message) }

  async start (): Promise<void> {
    const { libp2p } = this.components
    await libp2p.handle(PROTOCOL, async (stream, connection) => {
      if (this.isBanned(connection.remotePeer.toString())) {
        stream.abort(new Error('banned'))
        return
      }
      await this.server.handle(stream, connection)
    }, { maxInboundStreams: this.init.maxInboundStreams ?? 4, maxOutboundStreams: 4 })
    libp2p.addEventListener('peer:connect', this.onConnect)
    // Peers that connected before we listened (a bootstrap dial) get their stream too.
    for (const peer of libp2p.getPeers()) void this.client(peer)
  }

  async stop (): Promise<void> {
    const { libp2p } = this.components
    libp2p.removeEventListener('peer:connect', this.onConnect)
    await libp2p.unhandle(PROTOCOL).catch(() => {})
    await this.server.stop()
    for (const client of this.clients.values()) client.close()
    this.clients.clear()
  }

  private isBanned (peer: string): boolean {
    const until = this.banned.get(peer)
    if (until == null) return false
    if (until > Date.now()) return true
    this.banned.delete(peer)
    return false
  }

  /** The client for a peer: one stream, opened once, reused. */
  private async client (peer: PeerId, signal?: AbortSignal): Promise<PeerClient | undefined> {
    const key = peer.toString()
    if (this.isBanned(key) || peer.equals(this.components.libp2p.peerId)) return undefined
    const open = this.clients.get(key)
    if (open != null && !open.closed) return open
    let opening = this.opening.get(key)
    if (opening == null) {
      opening = PeerClient.open(this.components.libp2p, peer, {
        onMessage: (client, message) => { this.onMessage(client, message) },
        onClose: (client, err) => { this.onClose(client, err) }
      }, { compress: this.init.compression ?? true, signal }).then(client => {
        this.clients.set(key, client)
        return client
      }, err => {
        this.log(`cannot open a block stream to ${key}: ${(err as Error).message}`)
        return undefined
      }).finally(() => this.opening.delete(key))
      this.opening.set(key, opening)
    }
    return await opening
  }

  /** Asks a peer what it holds of `root` (once per peer and root). */
  private async ask (peer: PeerId, root: CID, signal?: AbortSignal): Promise<void> {
    const client = await this.client(peer, signal)
    if (client == null) return
    const rootKey = root.toString()
    let set = this.interested.get(client.key)
    if (set == null) this.interested.set(client.key, set = new Set())
    if (set.has(rootKey)) return
    set.add(rootKey)
    await client.interest(root).catch(() => {})
  }

  private onMessage (client: PeerClient, message: Message): void {
    if (message.type === T.HAVE) {
      this.onHave(client, message)
      return
    }
    if (message.type === T.BLOCK) {
      const wire = message.wire ?? message.data.length
      this.counters.bytesReceived += wire
      this.counters.blocksReceived++
      this.peerCounter(client.key).bytesReceived += wire
    }
    if (message.type === T.BLOCK || message.type === T.DONT_HAVE) {
      // A booting VM's read first; a pull of the same root may want the same block too.
      const demanded = this.demand.onMessage(client, message)
      for (const session of this.sessions.values()) {
        if (session.onMessage(client, message)) return
      }
      if (demanded) return
      if (message.type === T.BLOCK && [...this.finished.values()].some(s => s.asked(message.cid))) return
      if (message.type === T.BLOCK) {
        const n = (this.unsolicited.get(client.key) ?? 0) + 1
        this.unsolicited.set(client.key, n)
        if (n > (this.init.maxUnsolicited ?? 16)) this.ban(client.peer, `${n} unsolicited blocks`, client)
      }
      return
    }
    if (message.type === T.ELSEWHERE) {
      // Only for background wants (a pull's); one no pull is waiting for any more is of no concern.
      for (const session of this.sessions.values()) session.onMessage(client, message)
      return
    }
    this.ban(client.peer, `unexpected frame 0x${message.type.toString(16)} from a server`, client)
  }

  private onHave (client: PeerClient, message: Extract<Message, { type: typeof T.HAVE }>): void {
    const key = message.root.toString()
    const current = client.haves.get(key)
    client.answered.add(key)
    // Leaves added to what we knew it held: a pull counts them incrementally (undefined: look again at everything).
    let fresh: number[] | undefined
    if (message.all === true) {
      client.haves.set(key, { all: true })
    } else if (message.bitfield != null && message.count != null) {
      client.haves.set(key, { all: false, bitfield: new Bitfield(message.count, message.bitfield) })
    } else if (message.indices != null) {
      if (current?.bitfield == null) return
      fresh = []
      for (const i of message.indices) if (i < current.bitfield.size && current.bitfield.set(i)) fresh.push(i)
      if (current.bitfield.full) {
        client.haves.set(key, { all: true })
        fresh = undefined
      }
    } else {
      client.haves.delete(key)
    }
    this.sessions.get(key)?.onHave(client, fresh)
  }

  private onClose (client: PeerClient, err?: Error): void {
    if (this.clients.get(client.key) === client) this.clients.delete(client.key)
    this.interested.delete(client.key)
    for (const session of this.sessions.values()) session.onPeerClosed(client)
    if (err instanceof ProtocolError) this.ban(client.peer, err.message, client)
  }

  /** Bans a peer for `banTime`: closes our stream to it (`client`, or the one we hold) and hangs up. */
  private ban (peer: PeerId, reason: string, client = this.clients.get(peer.toString())): void {
    const key = peer.toString()
    if (this.isBanned(key)) return
    this.log(`banning ${key}: ${reason}`)
    this.banned.set(key, Date.now() + (this.init.banTime ?? 3_600_000))
    if (client != null) {
      client.close(new ProtocolError(reason))
      for (const session of this.sessions.values()) session.onPeerClosed(client)
    }
    void this.components.libp2p.hangUp(peer).catch(() => {})
  }

  /** What this host holds of a root: from a running pull, or from the store. */
  private async localHave (root: CID): Promise<{ root: CID, all?: boolean, count?: number, bitfield?: Uint8Array }> {
    const key = root.toString()
    const session = this.sessions.get(key)
    if (session?.local != null) {
      return session.local.full ? { root, all: true } : { root, count: session.local.size, bitfield: session.local.bytes.slice() }
    }
    const cached = this.haveCache.get(key)
    const generation = this.components.blockstore.readGeneration
    // A root held whole stays whole until blocks are deleted or moved (gc, fsck): the store's
    // generation says when. What is held of a partial root is asked again after HAVE_CACHE_MS.
    if (cached != null && cached.generation === generation && (cached.all || Date.now() - cached.at < HAVE_CACHE_MS)) return await cached.have
    // Computed once for peers that ask together (every host of a fan-out asks the publisher at once).
    const entry = { at: Date.now(), generation, all: false, have: this.storeHave(root) }
    this.haveCache.set(key, entry)
    const have = await entry.have
    entry.all = have.all === true
    return have
  }

  private async storeHave (root: CID): Promise<{ root: CID, all?: boolean, count?: number, bitfield?: Uint8Array }> {
    const store = this.components.blockstore
    try {
      if (await store.has(root)) {
        const skeleton = await loadSkeleton(root, await store.get(root), async cids => await store.getMany(cids))
        // The peers that asked will want these leaves: the store keeps their locations.
        const present = await store.hasManyToServe(leafDigests(skeleton))
        const bits = new Bitfield(skeleton.count)
        present.forEach((p, i) => { if (p) bits.set(i) })
        return bits.full ? { root, all: true } : { root, count: bits.size, bitfield: bits.bytes }
      }
    } catch {
      // An incomplete skeleton: we cannot say which leaves we hold, so we claim none.
    }
    return { root }
  }

  async fetch (root: CID, cids: CID[], options: FetchOptions = {}): Promise<Uint8Array[]> {
    const key = root.toString()
    let discovery = this.demandDiscovery.get(key)
    if (discovery == null) {
      discovery = { controller: new AbortController(), users: 0 }
      setMaxListeners(Infinity, discovery.controller.signal)
      this.demandDiscovery.set(key, discovery)
      void this.discover(root, discovery.controller.signal)
    }
    discovery.users++
    try {
      return await this.demand.fetch(root, cids, options)
    } finally {
      if (--discovery.users === 0) {
        discovery.controller.abort()
        this.demandDiscovery.delete(key)
      }
    }
  }

  /** Peers to ask for blocks of `root`: those that said they hold it first, then every connected peer. */
  private async demandCandidates (root: CID, signal: AbortSignal): Promise<PeerClient[]> {
    await Promise.all(this.components.libp2p.getPeers().map(async peer => { await this.ask(peer, root, signal) }))
    const key = root.toString()
    const clients = [...this.clients.values()].filter(c => !c.closed && !this.isBanned(c.key))
    return clients.sort((a, b) => Number(b.haves.has(key)) - Number(a.haves.has(key)))
  }

  async pull (root: CID, options: PullOptions = {}): Promise<PullResult> {
    const key = root.toString()
    const running = this.running.get(key)
    if (running != null) return await running
    const session = new PullSession(root, {
      store: this.components.blockstore,
      clients: () => [...this.clients.values()],
      ban: (client, reason) => { this.ban(client.peer, reason, client) },
      announce: (r, indices) => { this.server.announce(r, indices) },
      provide: r => { void this.provide(r).catch(() => {}) },
      log: this.init.log != null ? (m: string) => { this.log(m) } : undefined
    }, this.init, options)
    this.sessions.set(key, session)
    this.haveCache.delete(key)
    const discovery = new AbortController()
    const signal = options.signal != null ? AbortSignal.any([options.signal, discovery.signal]) : discovery.signal
    // Every peer asked and every DHT query listens on it for the length of the pull.
    setMaxListeners(Infinity, signal)
    let reask: ReturnType<typeof setInterval> | undefined
    const promise = (async () => {
      try {
        for (const peer of this.components.libp2p.getPeers()) void this.ask(peer, root, signal)
        for (const client of this.clients.values()) if (client.haves.has(key)) session.onHave(client)
        void this.discover(root, signal)
        // A stream that failed to open (a handshake that timed out on a loaded host) is tried again.
        reask = setInterval(() => {
          for (const peer of this.components.libp2p.getPeers()) {
            if (this.interested.get(peer.toString())?.has(key) !== true) void this.ask(peer, root, signal)
          }
        }, REASK_MS)
        return await session.run()
      } finally {
        clearInterval(reask)
        discovery.abort()
        this.sessions.delete(key)
        this.finished.set(key, session)
        setTimeout(() => { if (this.finished.get(key) === session) this.finished.delete(key) }, FINISHED_GRACE_MS).unref()
        this.running.delete(key)
        this.haveCache.delete(key)
      }
    })()
    this.running.set(key, promise)
    return await promise
  }

  /** Finds providers of `root` in the DHT until the pull ends. */
  private async discover (root: CID, signal: AbortSignal): Promise<void> {
    const { libp2p } = this.components
    // The first retries come soon (a provider may announce itself just after we start); later ones
    // less often: each query costs every peer it asks (16 hosts searching every 5 s showed in the
    // fan-out's profiles), and providers that connect are asked INTEREST anyway.
    let wait = DHT_RETRY_MS
    await this.untilUnseeded(root, signal)
    while (!signal.aborted) {
      if (this.holders(root) < ENOUGH_HOLDERS) {
        try {
          this.log(`searching the DHT for providers of ${root}`)
          for await (const provider of libp2p.contentRouting.findProviders(root, { signal })) {
            if (provider.id.equals(libp2p.peerId)) continue
            if (provider.multiaddrs.length > 0) await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
            void this.ask(provider.id, root, signal)
          }
        } catch (err) {
          if (!signal.aborted) this.log(`provider search for ${root}: ${(err as Error).message}`)
        }
      }
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, wait)
        wait = Math.min(wait * 2, DHT_RETRY_MAX_MS)
        signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
      })
    }
  }

  /** Connected peers that said they hold `root`, whole or in part. */
  private holders (root: CID): number {
    const key = root.toString()
    let n = 0
    for (const client of this.clients.values()) if (!client.closed && client.haves.has(key)) n++
    return n
  }

  private seeded (root: CID): boolean {
    const key = root.toString()
    for (const client of this.clients.values()) if (!client.closed && client.haves.get(key)?.all === true) return true
    return false
  }

  /**
   * Returns once the peers asked about `root` answered (or SEED_ANSWER_MS passed) if none of them
   * holds all of it; else once DHT_SEEDED_WAIT_MS passed since the pull started, or no seed is connected any more.
   */
  private async untilUnseeded (root: CID, signal: AbortSignal): Promise<void> {
    const started = Date.now()
    const poll = async (ms: number): Promise<void> => {
      await new Promise<void>(resolve => {
        const timer = setTimeout(done, ms)
        function done (): void { clearTimeout(timer); signal.removeEventListener('abort', done); resolve() }
        signal.addEventListener('abort', done, { once: true })
      })
    }
    const key = root.toString()
    // Peers we are still opening a block stream to, or that have not answered yet (every one is
    // asked at the start of the pull).
    const unanswered = (): boolean => this.opening.size > 0 || [...this.clients.values()].some(c => !c.closed && !c.answered.has(key))
    while (!signal.aborted && !this.seeded(root) && unanswered() && Date.now() - started < SEED_ANSWER_MS) await poll(50)
    if (!this.seeded(root)) return
    while (!signal.aborted && this.seeded(root) && Date.now() - started < DHT_SEEDED_WAIT_MS) await poll(250)
  }

  async provide (root: CID, options: { signal?: AbortSignal } = {}): Promise<void> {
    // What we hold of it, ready before the first peer asks (a fan-out's hosts all ask at once). Not
    // for a root being pulled: its session answers (from the store, it would load the skeleton
    // again and look up every leaf: 250 ms and a second copy of 58 000 CIDs at the start of a
    // 1 GiB pull).
    if (!this.sessions.has(root.toString())) void this.localHave(root).catch(() => {})
    // Once per root and process: the DHT re-provides its records before they expire. A pull
    // provides its root midway, and the daemon again when it pins it at the end.
    const key = root.toString()
    if (this.provided.has(key)) return
    this.provided.add(key)
    try {
      await this.components.libp2p.contentRouting.provide(root, options)
    } catch (err) {
      this.provided.delete(key)
      this.log(`providing ${root}: ${(err as Error).message}`)
    }
  }

  private peerCounter (peer: string): { bytesSent: number, bytesReceived: number } {
    let counter = this.perPeer.get(peer)
    if (counter == null) this.perPeer.set(peer, counter = { bytesSent: 0, bytesReceived: 0 })
    return counter
  }

  hasBlockStream (peer: string): boolean {
    const client = this.clients.get(peer)
    return client != null && !client.closed
  }

  peerStats (): Map<string, { bytesSent: number, bytesReceived: number }> {
    return new Map([...this.perPeer].map(([k, v]) => [k, { ...v }]))
  }

  stats (): TransferStats {
    const now = Date.now()
    const mark = this.rateMark
    const dt = (now - mark.at) / 1000
    if (dt >= 1) {
      mark.sendRate = (this.counters.bytesSent - mark.sent) / dt
      mark.receiveRate = (this.counters.bytesReceived - mark.received) / dt
      mark.at = now
      mark.sent = this.counters.bytesSent
      mark.received = this.counters.bytesReceived
    }
    return { ...this.counters, sendRate: mark.sendRate, receiveRate: mark.receiveRate }
  }
}

/** The block exchange over a libp2p node and a store. */
export function createExchange (components: ExchangeComponents, init: ExchangeInit = {}): BlockExchange {
  return new Exchange(components, init)
}
