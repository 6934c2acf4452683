import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { NbdServer } from './nbd/server.js'
import { DiskExports, type ExportBlocks } from './disk-exports.js'
import { LazyBlocks, type BlockFetcher } from './lazy-blocks.js'
import { launchVm, type LaunchOptions, type RunningVm } from './launcher.js'
import { NBD_SOCKET } from './vm-dir.js'
import { reapOrphans } from './vm-control.js'
import { VmRunningError } from './errors.js'
import type { NbdEvent, VmSpec } from './interface.js'
import type { Store } from '../store/index.js'
import { parseCid, type CID } from '../dag/hash.js'

const log = logger('collective:runtime')

/** How long stopping the runtime (the daemon, or a `run` on Ctrl-C) waits for guests to power off. */
export const SHUTDOWN_TIMEOUT = 15_000

export interface RuntimeComponents {
  store: Store
  dataDir: string
}

export interface RuntimeInit {
  /**
   * Lazy boot: blocks the store lacks are fetched from the swarm when a VM reads them, and the rest
   * of its disks follow in the background. A getter: the daemon's exchange exists only once it runs.
   */
  fetcher?: () => BlockFetcher | undefined
  onEvent?(event: NbdEvent): void
}

/**
 * The runtime of one host process: the NBD server on `<data-dir>/nbd.sock` serving disk roots, and the
 * VMs whose QEMU this process started. As a daemon service it is named `nbd`; a `run` without a
 * daemon starts one of its own. Stopping it powers the VMs off (killing them after a timeout), then
 * closes the server: no QEMU is left without its disks.
 */
export class Runtime {
  readonly name = 'nbd'
  readonly exports: DiskExports
  readonly server: NbdServer
  private readonly components: RuntimeComponents
  private readonly init: RuntimeInit
  private readonly vms = new Map<string, RunningVm>()
  private readonly starting = new Set<string>()
  private readonly background = new AbortController()
  /** Block bytes fetched from the swarm on demand, by this runtime's exports. */
  fetchedBytes = 0

  constructor (components: RuntimeComponents, init: RuntimeInit = {}) {
    this.components = components
    this.init = init
    this.exports = new DiskExports(root => this.blocksFor(root))
    this.server = new NbdServer({
      path: join(components.dataDir, NBD_SOCKET),
      resolve: async (name, options) => await this.exports.resolve(name, options),
      list: () => this.exports.list(),
      onEvent: event => {
        if (event.type === 'nbd:violation' || event.type === 'nbd:request-error') log('nbd: %o', event)
        init.onEvent?.(event)
      }
    })
  }

  /** The swarm, once the host that owns it is up (undefined before, or without one). */
  private fetcher (): BlockFetcher | undefined {
    try {
      return this.init.fetcher?.()
    } catch {
      return undefined
    }
  }

  private blocksFor (root: CID): ExportBlocks {
    const fetcher = this.fetcher()
    if (fetcher == null) return this.components.store.blocks
    return new LazyBlocks(this.components.store.blocks, root, fetcher, (cids, bytes) => {
      this.fetchedBytes += bytes
      log('fetched %d blocks (%d bytes) of %s on demand', cids.length, bytes, root)
    })
  }

  async start (): Promise<void> {
    const reaped = await reapOrphans(this.components.dataDir)
    if (reaped.length > 0) log('killed QEMU of %s: their disk server had died', reaped.join(', '))
    await this.server.listen()
  }

  /** Starts a VM whose disks this runtime serves; it runs until it powers off or `stop`. */
  async run (spec: VmSpec, options: LaunchOptions = {}): Promise<RunningVm> {
    if (this.vms.has(spec.name) || this.starting.has(spec.name)) throw new VmRunningError(`VM "${spec.name}" is already running (collective-peer stop ${spec.name})`)
    this.starting.add(spec.name)
    try {
      const fetcher = this.fetcher()
      const vm = await launchVm({
        dataDir: this.components.dataDir,
        blocksFor: root => this.blocksFor(root),
        prefetch: fetcher == null ? undefined : async (root, options) => { await fetcher.pull(root, options) },
        pins: this.components.store.pins,
        exports: this.exports,
        nbdSocket: this.server.path
      }, spec, options)
      this.vms.set(spec.name, vm)
      // The VM boots on demand reads; the rest of its disks streams in behind it at low priority.
      for (const disk of spec.disks) {
        if (fetcher != null) void fetcher.pull(parseCid(disk.root), { signal: this.background.signal }).catch(err => { log('background pull of %s: %s', disk.root, (err as Error).message) })
      }
      void vm.exited.finally(() => { if (this.vms.get(spec.name) === vm) this.vms.delete(spec.name) })
      return vm
    } finally {
      this.starting.delete(spec.name)
    }
  }

  get (name: string): RunningVm | undefined { return this.vms.get(name) }

  list (): RunningVm[] { return [...this.vms.values()] }

  async stop (): Promise<void> {
    this.background.abort()
    await Promise.allSettled([...this.vms.values()].map(async vm => { await vm.stop({ timeoutMs: SHUTDOWN_TIMEOUT }) }))
    await this.server.close()
  }
}

/** The daemon service factory (`services: [runtimeService()]`). */
export function runtimeService (init: RuntimeInit = {}): (components: RuntimeComponents) => Runtime {
  return components => new Runtime(components, init)
}
