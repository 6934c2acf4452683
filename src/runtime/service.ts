import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { NbdServer } from './nbd/server.js'
import { DiskExports, type ExportBlocks } from './disk-exports.js'
import { launchVm, type LaunchOptions, type RunningVm } from './launcher.js'
import { NBD_SOCKET } from './vm-dir.js'
import { reapOrphans } from './vm-control.js'
import { VmRunningError } from './errors.js'
import type { NbdEvent, VmSpec } from './interface.js'
import type { Store } from '../store/index.js'

const log = logger('collective:runtime')

/** How long stopping the runtime (the daemon, or a `run` on Ctrl-C) waits for guests to power off. */
export const SHUTDOWN_TIMEOUT = 15_000

export interface RuntimeComponents {
  store: Store
  dataDir: string
  /** Where disk blocks come from (default: the store; lazy boot puts the swarm behind it). */
  blocks?: ExportBlocks
}

export interface RuntimeInit {
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
  private readonly vms = new Map<string, RunningVm>()
  private readonly starting = new Set<string>()

  constructor (components: RuntimeComponents, init: RuntimeInit = {}) {
    this.components = components
    this.exports = new DiskExports(components.blocks ?? components.store.blocks)
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
      const vm = await launchVm({
        dataDir: this.components.dataDir,
        blocks: this.components.blocks ?? this.components.store.blocks,
        pins: this.components.store.pins,
        exports: this.exports,
        nbdSocket: this.server.path
      }, spec, options)
      this.vms.set(spec.name, vm)
      void vm.exited.finally(() => { if (this.vms.get(spec.name) === vm) this.vms.delete(spec.name) })
      return vm
    } finally {
      this.starting.delete(spec.name)
    }
  }

  get (name: string): RunningVm | undefined { return this.vms.get(name) }

  list (): RunningVm[] { return [...this.vms.values()] }

  async stop (): Promise<void> {
    await Promise.allSettled([...this.vms.values()].map(async vm => { await vm.stop({ timeoutMs: SHUTDOWN_TIMEOUT }) }))
    await this.server.close()
  }
}

/** The daemon service factory (`services: [runtimeService()]`). */
export function runtimeService (init: RuntimeInit = {}): (components: RuntimeComponents) => Runtime {
  return components => new Runtime(components, init)
}
