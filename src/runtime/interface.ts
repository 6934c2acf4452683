export * from './errors.js'

/** A run of bytes of an export, for BLOCK_STATUS: data, or zeros with no storage behind them. */
export interface NbdExtent {
  length: number
  /** A hole: reads as zeros, nothing stored (NBD_STATE_HOLE | NBD_STATE_ZERO). */
  zero: boolean
}

/**
 * What an NBD export serves. Read-only exports (publisher disks) leave the write methods out; the
 * server then answers writes with EPERM. Methods throw to fail one request (the client gets EIO and
 * the message); they never see malformed requests (the server checks ranges and flags first).
 */
export interface NbdExport {
  readonly size: number
  readonly readOnly: boolean
  readonly description?: string
  /** Safe to serve on many connections at once (no per-connection cache): NBD_FLAG_CAN_MULTI_CONN. */
  readonly multiConn: boolean
  /**
   * The bytes at [offset, offset + length). `into` (exactly `length` bytes) is where the server would
   * like them (its reply buffer): an export that can fill it returns it, saving a copy; any other
   * Uint8Array is also fine.
   */
  read(offset: number, length: number, options?: { signal?: AbortSignal, into?: Uint8Array }): Promise<Uint8Array>
  /** Extents covering [offset, offset + length) in order; may stop early (the client asks again). */
  extents(offset: number, length: number, options?: { signal?: AbortSignal }): Promise<NbdExtent[]>
  write?(offset: number, bytes: Uint8Array, options: { fua: boolean }): Promise<void>
  writeZeroes?(offset: number, length: number, options: { fua: boolean }): Promise<void>
  /** A hint that the range is no longer needed; may do nothing. */
  trim?(offset: number, length: number, options: { fua: boolean }): Promise<void>
  /** Resolves once every completed write is durable. */
  flush?(): Promise<void>
  close?(): Promise<void>
}

/** Finds the export a client names (undefined: no such export). */
export type ExportResolver = (name: string, options: { signal?: AbortSignal }) => Promise<NbdExport | undefined>

export type NbdEvent =
  | { type: 'nbd:connect', id: number }
  | { type: 'nbd:export', id: number, name: string, size: number }
  | { type: 'nbd:disconnect', id: number, reason: string }
  /** A client broke the protocol (its connection was closed). */
  | { type: 'nbd:violation', id: number, reason: string }
  /** A request failed on our side (a missing or corrupt block); the client got an error reply. */
  | { type: 'nbd:request-error', id: number, command: string, offset: number, length: number, error: string }

export interface NbdServerInit {
  /** The unix socket to listen on (created 0600). */
  path: string
  resolve: ExportResolver
  /** Names for NBD_OPT_LIST. */
  list?(): string[]
  /** The export a client gets when it asks for the empty name. */
  defaultExport?: string
  /** Largest READ/WRITE a client may send, in bytes. @default 32 MiB */
  maxRequest?: number
  /** Requests served at once per connection (more wait in the socket). @default 16 */
  maxInflight?: number
  onEvent?(event: NbdEvent): void
}

/** Where QEMU's accelerator comes from. `auto`: KVM when a probe guest runs under it, else TCG. */
export type Accel = 'auto' | 'kvm' | 'tcg'

export interface PortForward {
  protocol: 'tcp' | 'udp'
  /** Host address to listen on. @default 127.0.0.1 */
  hostAddress: string
  hostPort: number
  guestPort: number
}

/** A disk of a VM: a disk root in the store, served read-only, with a copy-on-write layer on top. */
export interface VmDisk {
  root: string
  role?: 'program' | 'user'
}

/**
 * Everything needed to run a VM. `run`'s flags fill it today; an appliance manifest (disks, vm spec)
 * will fill it later, with the same launcher.
 */
export interface VmSpec {
  name: string
  disks: VmDisk[]
  /** Guest memory in bytes. */
  memory: number
  cpus: number
  /** CIDs of content-addressed blobs (imported files); without a kernel the first disk boots itself. */
  kernel?: string
  initrd?: string
  cmdline?: string
  forwards: PortForward[]
  accel: Accel
  /** CID of the appliance's boot profile (a blob): the ranges its boot reads, prefetched first. */
  bootProfile?: string
}

/** A VM as `ps` shows it. */
export interface VmInfo {
  name: string
  state: 'running' | 'stopped'
  pid?: number
  accel?: 'kvm' | 'tcg'
  started?: string
  spec: VmSpec
  /** Bytes in the copy-on-write layers (host disk use). */
  layerBytes: number
  console: string
}

export type VmEvent =
  | { type: 'vm:accel', accel: 'kvm' | 'tcg', reason: string }
  | { type: 'vm:layer', disk: number, path: string, created: boolean }
  | { type: 'vm:started', name: string, pid: number, accel: 'kvm' | 'tcg' }
  | { type: 'vm:exited', name: string, code: number | null, signal: string | null }
