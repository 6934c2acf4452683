import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { NbdServer } from './nbd/server.js'
import { DiskExports, type ExportBlocks } from './disk-exports.js'
import { LazyBlocks, type BlockFetcher } from './lazy-blocks.js'
import { launchVm, type LaunchOptions, type RunningVm } from './launcher.js'
import { NBD_SOCKET } from './vm-dir.js'
import { reapOrphans } from './vm-control.js'
import { VmRunningError } from './errors.js'
import { ProfileRecorder, finishRecording, observeReads, type RecordOptions, type RecordedProfile } from './profile/index.js'
import { prefetchBootProfile } from './profile/prefetch-boot.js'
import { bootSettled } from './boot-settled.js'
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

/** Blocks the runtime's exports fetched from the swarm (counted since the runtime started). */
export interface LazyStats {
  /** Fetched because a guest read them (NBD reads that missed the store). */
  demandBlocks: number
  demandBytes: number
  /** Fetched ahead of the guest from boot profiles. */
  prefetchBlocks: number
  prefetchBytes: number
}

export interface RunOptions extends LaunchOptions {
  /** Record the boot's first reads of the disks into a profile file (`run --record-profile`). */
  record?: RecordOptions
}

/** A VM the runtime started; `profile` settles once its recording is written (with `record`). */
export interface RuntimeVm extends RunningVm {
  readonly profile?: Promise<RecordedProfile>
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
  /** Who watches the reads of each root (a recording boot profile), by root CID. */
  private readonly readWatchers = new Map<string, Set<(offset: number, length: number) => void>>()
  /** When each root was last read over NBD (a booting VM's disk I/O settling). */
  private readonly lastRead = new Map<string, number>()
  private readonly lazy: LazyStats = { demandBlocks: 0, demandBytes: 0, prefetchBlocks: 0, prefetchBytes: 0 }

  constructor (components: RuntimeComponents, init: RuntimeInit = {}) {
    this.components = components
    this.init = init
    this.exports = new DiskExports(root => this.blocksFor(root))
    this.server = new NbdServer({
      path: join(components.dataDir, NBD_SOCKET),
      resolve: async (name, options) => {
        const exp = await this.exports.resolve(name, options)
        if (exp == null) return undefined
        const root = parseCid(name).toString()
        return observeReads(exp, (offset, length) => {
          this.lastRead.set(root, Date.now())
          for (const watch of this.readWatchers.get(root) ?? []) watch(offset, length)
        })
      },
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

  /**
   * The blocks of `root`: the store, and with a swarm, the swarm behind it. Fetches are counted as
   * demand (a guest's read, the export opening) or as the boot profile's (its blob, the nodes it maps).
   */
  private blocksFor (root: CID, purpose: 'demand' | 'prefetch' = 'demand'): ExportBlocks {
    const fetcher = this.fetcher()
    if (fetcher == null) return this.components.store.blocks
    return new LazyBlocks(this.components.store.blocks, root, fetcher, (cids, bytes) => {
      if (purpose === 'prefetch') {
        this.lazy.prefetchBlocks += cids.length
        this.lazy.prefetchBytes += bytes
        return
      }
      this.lazy.demandBlocks += cids.length
      this.lazy.demandBytes += bytes
      log('fetched %d blocks (%d bytes) of %s on demand', cids.length, bytes, root)
    })
  }

  async start (): Promise<void> {
    const reaped = await reapOrphans(this.components.dataDir)
    if (reaped.length > 0) log('killed QEMU of %s: their disk server had died', reaped.join(', '))
    await this.server.listen()
  }

  /** Block bytes fetched from the swarm on demand, by this runtime's exports. */
  get fetchedBytes (): number { return this.lazy.demandBytes }

  /** What the exports fetched from the swarm: on demand (guest reads) and ahead (boot profiles). */
  stats (): LazyStats { return { ...this.lazy } }

  /** Starts recording the first reads of `spec`'s disks (before QEMU opens them). */
  private recordReads (spec: VmSpec): { recorder: ProfileRecorder, close: () => void } {
    const recorder = new ProfileRecorder(spec.disks.length)
    const watches: Array<[string, (offset: number, length: number) => void]> = []
    spec.disks.forEach((disk, i) => {
      const root = parseCid(disk.root).toString()
      // Two disks on one root: the first one's index names it.
      if (watches.some(([r]) => r === root)) return
      const watch = (offset: number, length: number): void => { recorder.onRead(i, offset, length) }
      let set = this.readWatchers.get(root)
      if (set == null) this.readWatchers.set(root, set = new Set())
      set.add(watch)
      watches.push([root, watch])
    })
    const close = (): void => {
      for (const [root, watch] of watches) {
        const set = this.readWatchers.get(root)
        set?.delete(watch)
        if (set?.size === 0) this.readWatchers.delete(root)
      }
    }
    return { recorder, close }
  }

  /** Starts a VM whose disks this runtime serves; it runs until it powers off or `stop`. */
  async run (spec: VmSpec, options: RunOptions = {}): Promise<RuntimeVm> {
    if (this.vms.has(spec.name) || this.starting.has(spec.name)) throw new VmRunningError(`VM "${spec.name}" is already running (collective-peer stop ${spec.name})`)
    this.starting.add(spec.name)
    const recording = options.record != null ? this.recordReads(spec) : undefined
    // The boot profile's ranges are fetched while the kernel and initrd come in and QEMU starts.
    const prefetch = new AbortController()
    const fetcher = this.fetcher()
    try {
      if (fetcher != null && spec.bootProfile != null) {
        const signal = AbortSignal.any([prefetch.signal, this.background.signal])
        void prefetchBootProfile({
          profile: parseCid(spec.bootProfile),
          disks: spec.disks.map(d => parseCid(d.root)),
          blocksFor: root => this.blocksFor(root, 'prefetch'),
          hasMany: async cids => await this.components.store.blocks.hasMany(cids),
          fetcher,
          onFetched: (blocks, bytes) => { this.lazy.prefetchBlocks += blocks; this.lazy.prefetchBytes += bytes }
        }, { signal }).then(r => {
          log('boot profile of %s: %d blocks (%d bytes) prefetched, %d local, %d failed, in %d ms', spec.name, r.blocks, r.bytes, r.local, r.failed, r.ms)
        }, err => { if (!signal.aborted) log('boot profile of %s: %s', spec.name, (err as Error).message) })
      }
      if (fetcher != null) {
        // QEMU needs the kernel and initrd whole before it starts: pull them side by side (the
        // launcher's own pulls, one after the other, join these).
        const signal = AbortSignal.any([prefetch.signal, this.background.signal])
        const started = Date.now()
        for (const blob of [spec.kernel, spec.initrd]) {
          if (blob != null) void fetcher.pull(parseCid(blob), { signal }).then(() => { log('%s: boot file %s local after %d ms', spec.name, blob, Date.now() - started) }, () => {})
        }
      }
      const vm = await launchVm({
        dataDir: this.components.dataDir,
        blocksFor: root => this.blocksFor(root),
        prefetch: fetcher == null ? undefined : async (root, options) => { await fetcher.pull(root, options) },
        pins: this.components.store.pins,
        exports: this.exports,
        nbdSocket: this.server.path
      }, spec, options)
      this.vms.set(spec.name, vm)
      // The VM boots on demand reads (and its profile's prefetch); once its disk I/O settles, the rest
      // of its disks streams in behind it at low priority.
      if (fetcher != null) void this.pullWhenSettled(spec, vm, fetcher)
      void vm.exited.finally(() => {
        prefetch.abort()
        if (this.vms.get(spec.name) === vm) this.vms.delete(spec.name)
      })
      if (recording == null) return vm
      const profile = finishRecording({ console: vm.dir.console, consoleStart: vm.consoleStart, exited: vm.exited }, recording.recorder, { ...options.record!, signal: this.background.signal })
        .finally(() => { recording.close() })
      profile.catch(() => {}) // the caller awaits it; a daemon's detached run only logs it
      return Object.assign(vm, { profile })
    } catch (err) {
      prefetch.abort()
      recording?.close()
      throw err
    } finally {
      this.starting.delete(spec.name)
    }
  }

  private async pullWhenSettled (spec: VmSpec, vm: RunningVm, fetcher: BlockFetcher): Promise<void> {
    const roots = spec.disks.map(d => parseCid(d.root).toString())
    const started = Date.now()
    const lastRead = (): number | undefined => {
      const times = roots.map(r => this.lastRead.get(r) ?? 0).filter(t => t >= started)
      return times.length === 0 ? undefined : Math.max(...times)
    }
    if (!await bootSettled({ lastRead, exited: vm.exited, signal: this.background.signal })) return
    log('%s: boot I/O settled after %d ms, pulling the rest of its disks', spec.name, Date.now() - started)
    for (const root of roots) {
      void fetcher.pull(parseCid(root), { signal: this.background.signal }).catch(err => { log('background pull of %s: %s', root, (err as Error).message) })
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
