import { KEEP_ALIVE } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, Logger, PeerInfo } from '@libp2p/interface'

/** One bootstrap dial may take this long (a SYN to a dead host waits for the kernel's timeout otherwise). */
export const BOOTSTRAP_DIAL_TIMEOUT = 10_000

/** While the host has no peer at all, it retries the bootstrap list this often. */
export const BOOTSTRAP_RETRY_INTERVAL = 30_000

/**
 * Peers found by discovery (mDNS, DHT walks) are dialled while the host has fewer connections than
 * this: enough for the exchange to fetch from many peers at once, far below the connection limit.
 */
export const DISCOVERY_DIAL_TARGET = 32

export type PeerDialerEvent =
  | { type: 'bootstrap:connected', address: string, peer: string }
  | { type: 'bootstrap:failed', address: string, reason: string }

export interface PeerDialerInit {
  /** Multiaddrs dialled at start and, while there are no peers, every BOOTSTRAP_RETRY_INTERVAL. */
  bootstrap: string[]
  /** Dial peers that discovery reports. @default true */
  dialDiscovered?: boolean
  /** @default BOOTSTRAP_DIAL_TIMEOUT */
  dialTimeout?: number
  /** @default BOOTSTRAP_RETRY_INTERVAL */
  retryInterval?: number
  onEvent?(event: PeerDialerEvent): void
}

/**
 * Keeps the host in the swarm: dials the bootstrap peers when libp2p starts (an unreachable one is an
 * event, never an error: a host that can reach nobody still serves the CLI), retries them while the
 * host is alone, and dials discovered peers while below DISCOVERY_DIAL_TARGET. A bootstrap peer is
 * tagged keep-alive, so libp2p's reconnect queue redials it after a disconnect.
 */
export class PeerDialer {
  private readonly libp2p: Libp2p
  private readonly init: PeerDialerInit
  private readonly log: Logger
  private controller?: AbortController
  private timer?: ReturnType<typeof setInterval>
  private readonly onDiscovery = (event: CustomEvent<PeerInfo>): void => { this.dialDiscovered(event.detail) }

  constructor (libp2p: Libp2p, init: PeerDialerInit) {
    this.libp2p = libp2p
    this.init = init
    this.log = libp2p.logger.forComponent('collective:net:dialer')
  }

  start (): void {
    this.controller = new AbortController()
    if (this.init.dialDiscovered !== false) this.libp2p.addEventListener('peer:discovery', this.onDiscovery)
    if (this.init.bootstrap.length === 0) return
    void this.dialBootstrap()
    this.timer = setInterval(() => {
      if (this.libp2p.getConnections().length === 0) void this.dialBootstrap()
    }, this.init.retryInterval ?? BOOTSTRAP_RETRY_INTERVAL)
    this.timer.unref()
  }

  stop (): void {
    this.controller?.abort()
    clearInterval(this.timer)
    this.libp2p.removeEventListener('peer:discovery', this.onDiscovery)
  }

  /** Dials every bootstrap address at once; resolves when each has connected or failed. */
  async dialBootstrap (): Promise<void> {
    await Promise.all(this.init.bootstrap.map(async address => { await this.dialOne(address) }))
  }

  private async dialOne (address: string): Promise<void> {
    const signal = this.controller?.signal
    if (signal == null || signal.aborted) return
    try {
      const connection = await this.libp2p.dial(multiaddr(address), {
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.init.dialTimeout ?? BOOTSTRAP_DIAL_TIMEOUT)])
      })
      await this.libp2p.peerStore.merge(connection.remotePeer, { tags: { [KEEP_ALIVE]: { value: 1 } } }).catch(() => {})
      this.init.onEvent?.({ type: 'bootstrap:connected', address, peer: connection.remotePeer.toString() })
    } catch (err) {
      if (signal.aborted) return
      this.log('bootstrap %s unreachable: %e', address, err)
      this.init.onEvent?.({ type: 'bootstrap:failed', address, reason: describe(err) })
    }
  }

  private dialDiscovered (peer: PeerInfo): void {
    const signal = this.controller?.signal
    if (signal == null || signal.aborted) return
    if (this.libp2p.getConnections().length >= DISCOVERY_DIAL_TARGET) return
    if (this.libp2p.getConnections(peer.id).length > 0) return
    this.libp2p.dial(peer.id, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.init.dialTimeout ?? BOOTSTRAP_DIAL_TIMEOUT)]) })
      .then(() => { this.log('dialled discovered peer %p', peer.id) })
      .catch(err => { this.log('discovered peer %p unreachable: %e', peer.id, err) })
  }
}

/** A one-line reason: libp2p's aggregate dial errors carry the useful part in `errors`. */
function describe (err: unknown): string {
  const errors = (err as AggregateError)?.errors
  const inner = Array.isArray(errors) && errors.length > 0 ? errors[0] : err
  const message = (inner as Error)?.message ?? String(inner)
  return message.split('\n')[0]!
}
