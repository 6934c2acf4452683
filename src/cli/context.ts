import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import envPaths from 'env-paths'
// The store and the DAG code load when a command needs them: a command the daemon runs only
// needs this process to forward it (~35 ms less to start).
import type { Store } from '../store/index.js'
import type { CID } from 'multiformats/cid'
import { NotFoundError } from '../errors.js'
import { ProgressRenderer, type Output } from './progress.js'
import type { DaemonHandle } from '../daemon/interface.js'

export interface GlobalFlags {
  dataDir?: string
  json: boolean
}

/** Where a command writes, and where relative paths start (a daemon runs commands for clients). */
export interface CommandIO {
  stdout: Output
  stderr: Output
  cwd: string
}

export function processIO (): CommandIO {
  return { stdout: process.stdout, stderr: process.stderr, cwd: process.cwd() }
}

/** What a command gets: resolved paths, output helpers, an abort signal for Ctrl-C. */
export class Context {
  readonly dataDir: string
  readonly json: boolean
  readonly signal: AbortSignal
  readonly progress: ProgressRenderer
  readonly io: CommandIO
  /** Set when the command runs inside the daemon that owns the data dir. */
  readonly daemon?: DaemonHandle
  private store?: Store

  constructor (flags: GlobalFlags, signal: AbortSignal, io: CommandIO = processIO(), daemon?: DaemonHandle) {
    this.dataDir = daemon?.dataDir ?? resolveDataDir(flags.dataDir, io.cwd)
    this.json = flags.json
    this.signal = signal
    this.io = io
    this.daemon = daemon
    this.progress = new ProgressRenderer({ json: flags.json, stream: io.stderr, out: io.stdout })
  }

  get tmpDir (): string { return join(this.dataDir, 'tmp') }

  /** A path given by the user, relative to their working directory. */
  path (p: string): string { return resolve(this.io.cwd, p) }

  /** Opens the data dir's store (once); closed by the CLI when the command ends. In a daemon, its store. */
  async openStore (): Promise<Store> {
    if (this.daemon != null) return this.daemon.store
    if (this.store == null) {
      await mkdir(this.tmpDir, { recursive: true })
      const { openStore } = await import('../store/index.js')
      this.store = await openStore(this.dataDir)
    }
    return this.store
  }

  /** A CID, or the name of a pin. */
  async resolveRoot (ref: string): Promise<CID> {
    const store = await this.openStore()
    const { parseCid } = await import('../dag/hash.js')
    const pin = await store.pins.get(ref)
    if (pin != null) return parseCid(pin.root)
    if (/^[a-z0-9]{20,}$/i.test(ref)) return parseCid(ref)
    throw new NotFoundError(`"${ref}" is neither a CID nor the name of a root in the store`)
  }

  /** A line for people (stdout); silent with --json. */
  say (line: string): void {
    this.progress.clear()
    if (!this.json) this.io.stdout.write(line + '\n')
  }

  /** A note for people on stderr; silent with --json. */
  note (line: string): void {
    this.progress.clear()
    if (!this.json) this.io.stderr.write(line + '\n')
  }

  /** One NDJSON line (only with --json). */
  emit (object: unknown): void {
    if (this.json) this.io.stdout.write(JSON.stringify(object) + '\n')
  }

  /** Raw bytes to stdout, waiting while the reader is slow. */
  async write (bytes: Uint8Array): Promise<void> {
    const out = this.io.stdout
    if (!out.write(bytes) && out.once != null) await new Promise<void>(resolve => out.once!('drain', resolve))
  }

  /** The command's result: the last NDJSON line with --json. */
  result (object: unknown): void {
    this.progress.done()
    this.emit(object)
  }

  async close (): Promise<void> {
    this.progress.done()
    await this.store?.close()
    this.store = undefined
  }
}

export function resolveDataDir (flag?: string, cwd: string = process.cwd()): string {
  const dir = flag ?? process.env.COLLECTIVE_DATA_DIR
  if (dir != null && dir !== '') return resolve(cwd, dir)
  return envPaths('collective-peer', { suffix: '' }).data
}
