import { CollectiveError, ExitCode } from '../errors.js'
import type { CollectiveNode, NodeEvent } from '../net/node.js'
import type { BlockExchange, TransferStats } from '../net/interface.js'
import type { ProcessStats } from '../util/process-stats.js'
import type { Store } from '../store/index.js'
import type { SharedExclusiveLock } from './lock.js'
import type { Output } from '../cli/progress.js'
import type { Announcer, Appliances, Updater } from '../publish/index.js'

/** The control socket's name inside the data dir (HTTP+JSON, mode 0600). */
export const CONTROL_SOCKET = 'control.sock'

/** What a service of the daemon is built from. */
export interface ServiceComponents {
  libp2p: CollectiveNode
  store: Store
  dataDir: string
}

/**
 * Something the daemon runs next to libp2p (the block exchange, announcements, the NBD server):
 * started in list order once libp2p has started, stopped in reverse order before it stops.
 */
export interface DaemonService {
  readonly name: string
  start(options?: { signal?: AbortSignal }): Promise<void>
  stop(): Promise<void>
}

export type ServiceFactory = (components: ServiceComponents) => DaemonService | Promise<DaemonService>

/** The `status` figures. */
export interface DaemonStatus {
  peerId: string
  addresses: string[]
  /** Connected peers (distinct peer ids). */
  peers: number
  /** Named roots (pins) in the store. */
  roots: number
  /** The block exchange's counters; null while no exchange runs. */
  transfer: TransferStats | null
  /** The daemon process's CPU, memory and garbage collections. */
  process: ProcessStats
}

/** One open connection, for `peers`. */
export interface PeerConnection {
  peer: string
  address: string
  direction: 'inbound' | 'outbound'
  /** Block bytes sent to / received from this peer since the daemon started. */
  bytesSent: number
  bytesReceived: number
  /** Our block stream to it is open (opened when it connects: it speaks /collective/blocks). */
  blockStream: boolean
}

/** What a CLI command running inside the daemon sees of it (`ctx.daemon`). */
export interface DaemonHandle {
  readonly dataDir: string
  readonly libp2p: CollectiveNode
  readonly store: Store
  readonly exchange: BlockExchange
  readonly appliances: Appliances
  readonly updater: Updater
  readonly announcer: Announcer
  /** Commands that add blocks hold it shared; gc and fsck, which delete blocks, exclusive. */
  readonly lock: SharedExclusiveLock
  /** Provide (DHT) every pinned root not yet provided: after a command may have added one. */
  provideRoots(): Promise<void>
  status(options?: { signal?: AbortSignal }): Promise<DaemonStatus>
  peers(): PeerConnection[]
  /** A running service by name (e.g. `nbd`), for commands that drive it. */
  service<T extends DaemonService = DaemonService>(name: string): T | undefined
}

/** A CLI invocation sent to the daemon (`POST /run`). */
export interface RunRequest {
  argv: string[]
  /** The client's working directory: relative paths in `argv` are resolved against it. */
  cwd: string
  /** Whether the client's stdout/stderr are terminals (progress bars), and its width. */
  tty?: { stdout: boolean, stderr: boolean, columns?: number }
}

/** Where a command running in the daemon writes: streamed back to the client. */
export interface RunOutput {
  stdout: Output
  stderr: Output
}

/** Runs one CLI invocation inside the daemon; resolves to its exit code (errors already reported on `output`). */
export type CommandRunner = (request: RunRequest, output: RunOutput, signal: AbortSignal) => Promise<number>

export type DaemonEvent =
  | { type: 'daemon:ready', peerId: string, addresses: string[] }
  | { type: 'daemon:stopping' }
  | { type: 'daemon:stopped' }
  /** The store indexed blocks a killed process had written but not committed (Blockstore.recovered). */
  | { type: 'store:recovered', blocks: number, bytes: number }
  | { type: 'service:started', name: string }
  | { type: 'service:failed', name: string, error: string }
  | { type: 'control:error', error: string }
  | { type: 'peer:connect', peer: string, address: string, direction: string }
  | { type: 'peer:disconnect', peer: string }
  /** An announcement was accepted, refused, or its version fetched. */
  | { type: 'appliance:accepted' | 'appliance:refused' | 'appliance:fetched', id: string, version?: number, reason?: string }
  | NodeEvent

export class DaemonRunningError extends CollectiveError {
  static readonly code = 'ERR_DAEMON_RUNNING'
  override readonly name = 'DaemonRunningError'
  constructor (dataDir: string) {
    super(`a daemon is already running on ${dataDir}`, DaemonRunningError.code, ExitCode.Busy)
  }
}

export class NoDaemonError extends CollectiveError {
  static readonly code = 'ERR_NO_DAEMON'
  override readonly name = 'NoDaemonError'
  constructor (dataDir: string) {
    super(`no daemon is running on ${dataDir} (start one with: collective-peer daemon)`, NoDaemonError.code, ExitCode.NotFound)
  }
}

export class DaemonLostError extends CollectiveError {
  static readonly code = 'ERR_DAEMON_LOST'
  override readonly name = 'DaemonLostError'
  constructor (message: string, options?: ErrorOptions) { super(message, DaemonLostError.code, ExitCode.Failure, options) }
}
