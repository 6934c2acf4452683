import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { coalescedWrites } from './coalesce.js'
import { batchYamuxWindowUpdates } from './yamux-window.js'
import { tuneHeapGrowth } from '../util/heap.js'
import { watchGc } from '../util/process-stats.js'
import { yamux } from '@libp2p/yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, type KadDHT, type PeerInfoMapper, type Selectors, type Validators } from '@libp2p/kad-dht'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { mdns } from '@libp2p/mdns'
import { CollectiveError, ExitCode } from '../errors.js'
import { loadOrCreatePeerKey } from './keys.js'
import { PeerDialer, type PeerDialerEvent } from './bootstrap.js'
import { DEFAULT_LISTEN, DEFAULT_MDNS } from './config.js'
import type { Libp2p, PrivateKey } from '@libp2p/interface'

/** The DHT of this swarm, apart from IPFS's public one: its records (appliance roots) mean nothing there. */
export const DHT_PROTOCOL = '/collective/kad/1.0.0'

/** mDNS service name: hosts answer each other, not every IPFS node on the LAN. */
export const MDNS_SERVICE_TAG = '_collective-peer._udp.local'

// Connection and stream limits. Each connection costs a noise session, a yamux muxer and the streams
// on it (buffers of up to a window each); a 2-core host must stay responsive to its VMs and its CLI.

/** Connections kept open before libp2p prunes the least valuable: plenty for fetching from many peers at once. */
export const MAX_CONNECTIONS = 200

/**
 * Inbound connections still in their handshake (noise: X25519 + ed25519 per connection). Above
 * libp2p's 10 so a burst of hosts joining after an announcement is not refused; bounded so a flood
 * of half-open handshakes cannot eat the CPU.
 */
export const MAX_INCOMING_PENDING_CONNECTIONS = 32

/** New inbound connections per second from one IP. Above libp2p's 5: tests and NAT'd sites run many hosts behind one address. */
export const INBOUND_CONNECTION_THRESHOLD = 25

/**
 * A remote peer that opens a stream must finish protocol negotiation (one round trip) within this;
 * otherwise it holds a stream slot for nothing. libp2p's default is 10 s.
 */
export const INBOUND_STREAM_PROTOCOL_NEGOTIATION_TIMEOUT = 5_000

/** How often each connection is pinged (libp2p's connection monitor; its default is 10 s). */
const CONNECTION_PING_MS = 60_000
/** An inbound connection must finish its upgrade (noise + yamux) within this. */
export const INBOUND_UPGRADE_TIMEOUT = 10_000

/**
 * Streams per connection and protocol. Identify and ping need one at a time (two to overlap a
 * push with a request); the DHT's RPCs are short and a peer has no business running more than a
 * few in parallel (libp2p's default is 32); gossipsub keeps one long-lived stream per direction.
 */
export const STREAM_LIMITS = {
  identify: { maxInboundStreams: 2, maxOutboundStreams: 2 },
  ping: { maxInboundStreams: 2, maxOutboundStreams: 2 },
  dht: { maxInboundStreams: 16, maxOutboundStreams: 32 },
  pubsub: { maxInboundStreams: 2, maxOutboundStreams: 2 }
} as const

export interface NodeServices {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
  [key: string]: unknown
}

export type CollectiveNode = Libp2p<NodeServices>

export type NodeEvent = PeerDialerEvent

export interface NodeInit {
  /** The peer key; or `dataDir`, to load (or create) `<dataDir>/peer.key`. */
  privateKey?: PrivateKey
  dataDir?: string
  /** @default DEFAULT_LISTEN */
  listen?: string[]
  /** Dialled after start; unreachable ones are `bootstrap:failed` events. @default [] */
  bootstrap?: string[]
  /** @default DEFAULT_MDNS */
  mdns?: boolean
  onEvent?(event: NodeEvent): void
  /** DHT record types this swarm stores (by key namespace): how to validate them and pick the best. */
  dhtRecords?: { validators: Validators, selectors: Selectors }
  /**
   * The most a yamux stream lets its peer send ahead (bytes). For benches: a reader slower than its
   * sender holds this much in buffers that outlive scavenges (docs/benchmarks.md, "the floor").
   * @default yamux's own, 16 MiB
   */
  streamWindow?: number
  signal?: AbortSignal
}

export class AddressInUseError extends CollectiveError {
  static readonly code = 'ERR_ADDRESS_IN_USE'
  override readonly name = 'AddressInUseError'
  constructor (message: string, options?: ErrorOptions) { super(message, AddressInUseError.code, ExitCode.Busy, options) }
}

export class ListenError extends CollectiveError {
  static readonly code = 'ERR_LISTEN'
  override readonly name = 'ListenError'
  constructor (message: string, options?: ErrorOptions) { super(message, ListenError.code, ExitCode.Failure, options) }
}

/**
 * Keeps every address except the unspecified ones: the swarm runs on LANs and on 127.0.0.1 in tests,
 * where kad-dht's default (drop private addresses) would leave peers undialable. A wrong address costs
 * one failed dial; noise checks the peer id, so it never reaches the wrong host.
 */
export const keepDialableAddresses: PeerInfoMapper = peer => ({
  ...peer,
  multiaddrs: peer.multiaddrs.filter(ma => !/^\/ip[46]\/(0\.0\.0\.0|::)\//.test(ma.toString()))
})

/**
 * A libp2p node for the swarm, not yet started: TCP, noise, yamux, identify, ping, the swarm's own
 * kad-dht (server mode), gossipsub, mDNS. Start it with `startNode` (typed listen errors); once
 * started it dials the bootstrap peers in the background.
 */
export async function createNode (init: NodeInit = {}): Promise<CollectiveNode> {
  batchYamuxWindowUpdates()
  tuneHeapGrowth()
  watchGc()
  const privateKey = init.privateKey ?? (init.dataDir != null ? await loadOrCreatePeerKey(init.dataDir, { signal: init.signal }) : undefined)
  const node = await createLibp2p<NodeServices>({
    start: false,
    privateKey,
    addresses: { listen: init.listen ?? DEFAULT_LISTEN },
    transports: [tcp()],
    connectionEncrypters: [coalescedWrites(noise())],
    streamMuxers: [yamux(init.streamWindow != null ? { streamOptions: { maxStreamWindowSize: init.streamWindow } } : {})],
    peerDiscovery: (init.mdns ?? DEFAULT_MDNS) ? [mdns({ serviceTag: MDNS_SERVICE_TAG })] : [],
    // libp2p pings every connection every 10 s by default, each ping a new stream (protocol
    // negotiation, a peer-store update): most of an idle host's CPU with 16 peers. Once a minute
    // still finds a dead connection; yamux's keep-alive (30 s) keeps NAT mappings open.
    connectionMonitor: { pingInterval: CONNECTION_PING_MS },
    connectionManager: {
      maxConnections: MAX_CONNECTIONS,
      maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS,
      inboundConnectionThreshold: INBOUND_CONNECTION_THRESHOLD,
      inboundStreamProtocolNegotiationTimeout: INBOUND_STREAM_PROTOCOL_NEGOTIATION_TIMEOUT,
      inboundUpgradeTimeout: INBOUND_UPGRADE_TIMEOUT
    },
    services: {
      identify: identify(STREAM_LIMITS.identify),
      ping: ping(STREAM_LIMITS.ping),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: false,
        // The first self-query runs once the routing table has a peer (kad-dht waits for one), not a
        // fixed second after start: every query waits for it, and a host that starts and at once
        // runs an appliance by id would wait that second for the manifest.
        initialQuerySelfInterval: 0,
        peerInfoMapper: keepDialableAddresses,
        validators: init.dhtRecords?.validators,
        selectors: init.dhtRecords?.selectors,
        ...STREAM_LIMITS.dht
      }),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, ...STREAM_LIMITS.pubsub })
    }
  })
  const dialer = new PeerDialer(node, { bootstrap: init.bootstrap ?? [], onEvent: init.onEvent })
  node.addEventListener('start', () => { dialer.start() })
  node.addEventListener('stop', () => { dialer.stop() })
  return node
}

/** Starts the node; a listen address that cannot be bound becomes a one-line typed error naming it. */
export async function startNode (node: CollectiveNode): Promise<void> {
  try {
    await node.start()
  } catch (err) {
    throw listenError(err)
  }
}

/** libp2p reports listen failures as one message with a line per address: `  <addr>: Error: listen EADDRINUSE: …`. */
function listenError (err: unknown): unknown {
  if ((err as Error)?.name !== 'UnsupportedListenAddressesError') return err
  const message = (err as Error).message
  const line = /^\s*(\/\S+): Error: listen (E[A-Z]+)/m.exec(message)
  if (line == null) return new ListenError(message.split('\n')[0]!, { cause: err })
  const [, address, code] = line
  if (code === 'EADDRINUSE') return new AddressInUseError(`cannot listen on ${address}: address already in use`, { cause: err })
  if (code === 'EADDRNOTAVAIL') return new ListenError(`cannot listen on ${address}: not an address of this host`, { cause: err })
  if (code === 'EACCES') return new ListenError(`cannot listen on ${address}: permission denied`, { cause: err })
  return new ListenError(`cannot listen on ${address}: ${code}`, { cause: err })
}
