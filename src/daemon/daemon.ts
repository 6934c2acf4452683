import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { ControlServer, daemonAnswers } from './control.js'
import { SharedExclusiveLock } from './lock.js'
import { CONTROL_SOCKET, DaemonRunningError, type CommandRunner, type DaemonEvent, type DaemonHandle, type DaemonService, type DaemonStatus, type PeerConnection, type ServiceFactory } from './interface.js'
import { createNode, startNode, type CollectiveNode } from '../net/node.js'
import { createExchange, type ExchangeInit } from '../net/exchange/index.js'
import { collectGarbage, openStore, type Store } from '../store/index.js'
import { Announcer, Appliances, Updater, dhtSelectors, dhtValidators } from '../publish/index.js'
import { parseCid } from '../dag/hash.js'
import { StoreLockedError, fromSystemError } from '../errors.js'
import type { NetConfig } from '../net/config.js'
import type { BlockExchange } from '../net/interface.js'
import { processStats } from '../util/process-stats.js'

const log = logger('collective:daemon')

export interface DaemonInit {
  dataDir: string
  net: NetConfig
  /** Runs CLI invocations that clients send to the control socket. */
  runCommand: CommandRunner
  exchange?: ExchangeInit
  /** More services (started after the exchange, stopped before it). */
  services?: ServiceFactory[]
  onEvent?(event: DaemonEvent): void
  signal?: AbortSignal
}

/**
 * The host process: one store, one libp2p node, the block exchange serving and fetching blocks, and
 * the control socket through which CLI commands run while it owns the data dir. `stop` undoes
 * `start` in reverse order, so a SIGINT never leaves the store half-written.
 */
export class Daemon implements DaemonHandle {
  readonly dataDir: string
  readonly store: Store
  readonly libp2p: CollectiveNode
  readonly exchange: BlockExchange
  readonly appliances: Appliances
  readonly updater: Updater
  readonly announcer: Announcer
  readonly lock: SharedExclusiveLock
  private readonly control: ControlServer
  private readonly services: DaemonService[]
  private readonly provided = new Set<string>()
  private readonly onEvent: (event: DaemonEvent) => void

  private constructor (init: DaemonInit, parts: { store: Store, libp2p: CollectiveNode, exchange: BlockExchange, services: DaemonService[], appliances: Appliances, updater: Updater, announcer: Announcer, lock: SharedExclusiveLock }) {
    const { store, libp2p, exchange, services } = parts
    this.dataDir = init.dataDir
    this.store = store
    this.libp2p = libp2p
    this.exchange = exchange
    this.appliances = parts.appliances
    this.updater = parts.updater
    this.announcer = parts.announcer
    this.lock = parts.lock
    this.services = services
    this.onEvent = init.onEvent ?? (() => {})
    this.control = new ControlServer(join(init.dataDir, CONTROL_SOCKET), this, init.runCommand, err => {
      log.error('control request failed: %e', err)
      this.onEvent({ type: 'control:error', error: err.message })
    })
  }

  static async start (init: DaemonInit): Promise<Daemon> {
    const { dataDir } = init
    try {
      await mkdir(join(dataDir, 'tmp'), { recursive: true, mode: 0o700 })
    } catch (err) {
      throw fromSystemError(err, dataDir)
    }
    const socket = join(dataDir, CONTROL_SOCKET)
    if (await daemonAnswers(socket)) throw new DaemonRunningError(dataDir)
    let store: Store
    try {
      store = await openStore(dataDir)
    } catch (err) {
      // Another process holds the store: a daemon still starting, or an offline command.
      if (err instanceof StoreLockedError) throw new DaemonRunningError(dataDir)
      throw err
    }
    const cleanup: Array<() => Promise<void>> = [async () => { await store.close() }]
    try {
      const onEvent = init.onEvent ?? (() => {})
      const { recovered } = store.blocks
      if (recovered.blocks > 0) onEvent({ type: 'store:recovered', ...recovered })
      const libp2p = await createNode({
        dataDir,
        listen: init.net.listen,
        bootstrap: init.net.bootstrap,
        mdns: init.net.mdns,
        dhtRecords: { validators: dhtValidators, selectors: dhtSelectors },
        onEvent,
        signal: init.signal
      })
      await startNode(libp2p)
      cleanup.unshift(async () => { await libp2p.stop() })
      const exchange = createExchange({ libp2p, blockstore: store.blocks }, { log: message => { log(message) }, ...init.exchange })
      await exchange.start()
      cleanup.unshift(async () => { await exchange.stop() })
      const lock = new SharedExclusiveLock()
      const appliances = new Appliances(dataDir)
      const updater = new Updater({
        store,
        appliances,
        exchange,
        // Not awaited: the update may run inside a command that holds the lock shared.
        collectGarbage: async () => { void lock.run(true, async () => { await collectGarbage(store.blocks, store.pins) }).catch(err => { log.error('gc after an update: %e', err) }) },
        onEvent: event => { onEvent({ type: `appliance:${event.type}`, id: event.id, version: event.version, reason: event.reason }) }
      })
      const announcer = new Announcer({ libp2p, appliances, updater, lock })
      await announcer.start()
      cleanup.unshift(async () => { await announcer.stop() })
      const services: DaemonService[] = []
      for (const factory of init.services ?? []) {
        const service = await factory({ libp2p, store, dataDir })
        await service.start({ signal: init.signal })
        services.push(service)
        cleanup.unshift(async () => { await service.stop() })
        onEvent({ type: 'service:started', name: service.name })
      }
      const daemon = new Daemon(init, { store, libp2p, exchange, services, appliances, updater, announcer, lock })
      daemon.watchPeers()
      await daemon.control.listen()
      void daemon.provideRoots()
      onEvent({ type: 'daemon:ready', peerId: libp2p.peerId.toString(), addresses: daemon.addresses() })
      return daemon
    } catch (err) {
      for (const step of cleanup) await step().catch(() => {})
      throw err
    }
  }

  private watchPeers (): void {
    this.libp2p.addEventListener('peer:connect', event => {
      const connection = this.libp2p.getConnections(event.detail)[0]
      this.onEvent({ type: 'peer:connect', peer: event.detail.toString(), address: connection?.remoteAddr.toString() ?? '', direction: connection?.direction ?? 'outbound' })
    })
    this.libp2p.addEventListener('peer:disconnect', event => {
      this.onEvent({ type: 'peer:disconnect', peer: event.detail.toString() })
    })
  }

  addresses (): string[] {
    return this.libp2p.getMultiaddrs().map(ma => ma.toString())
  }

  async provideRoots (): Promise<void> {
    for (const pin of await this.store.pins.list()) {
      if (this.provided.has(pin.root)) continue
      this.provided.add(pin.root)
      void this.exchange.provide(parseCid(pin.root))
    }
  }

  async status (): Promise<DaemonStatus> {
    return {
      peerId: this.libp2p.peerId.toString(),
      addresses: this.addresses(),
      peers: this.libp2p.getPeers().length,
      roots: (await this.store.pins.list()).length,
      transfer: this.exchange.stats(),
      process: processStats()
    }
  }

  service<T extends DaemonService = DaemonService> (name: string): T | undefined {
    return this.services.find(s => s.name === name) as T | undefined
  }

  peers (): PeerConnection[] {
    const stats = this.exchange.peerStats()
    return this.libp2p.getConnections().map(connection => {
      const peer = connection.remotePeer.toString()
      return {
        peer,
        address: connection.remoteAddr.toString(),
        direction: connection.direction,
        bytesSent: stats.get(peer)?.bytesSent ?? 0,
        bytesReceived: stats.get(peer)?.bytesReceived ?? 0,
        blockStream: this.exchange.hasBlockStream(peer)
      }
    })
  }

  async stop (): Promise<void> {
    this.onEvent({ type: 'daemon:stopping' })
    await this.control.close().catch(err => { log.error('closing the control socket: %e', err) })
    for (const service of [...this.services].reverse()) await service.stop().catch(err => { log.error('stopping %s: %e', service.name, err) })
    await this.exchange.stop().catch(err => { log.error('stopping the exchange: %e', err) })
    await Promise.resolve(this.libp2p.stop()).catch(err => { log.error('stopping libp2p: %e', err) })
    // Waits for running commands that hold the store, then commits and closes it.
    await this.lock.run(true, async () => { await this.store.close() })
    this.onEvent({ type: 'daemon:stopped' })
  }
}
