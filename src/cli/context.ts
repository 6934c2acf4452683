import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import envPaths from 'env-paths'
import { openStore, type Store } from '../store/index.js'
import { parseCid, type CID } from '../dag/hash.js'
import { NotFoundError } from '../errors.js'
import { ProgressRenderer } from './progress.js'

export interface GlobalFlags {
  dataDir?: string
  json: boolean
}

/** What a command gets: resolved paths, output helpers, an abort signal for Ctrl-C. */
export class Context {
  readonly dataDir: string
  readonly json: boolean
  readonly signal: AbortSignal
  readonly progress: ProgressRenderer
  private store?: Store

  constructor (flags: GlobalFlags, signal: AbortSignal) {
    this.dataDir = resolveDataDir(flags.dataDir)
    this.json = flags.json
    this.signal = signal
    this.progress = new ProgressRenderer({ json: flags.json, stream: process.stderr, out: process.stdout })
  }

  get tmpDir (): string { return join(this.dataDir, 'tmp') }

  /** Opens the data dir's store (once); closed by the CLI when the command ends. */
  async openStore (): Promise<Store> {
    if (this.store == null) {
      await mkdir(this.tmpDir, { recursive: true })
      this.store = await openStore(this.dataDir)
    }
    return this.store
  }

  /** A CID, or the name of a pin. */
  async resolveRoot (ref: string): Promise<CID> {
    const store = await this.openStore()
    const pin = await store.pins.get(ref)
    if (pin != null) return parseCid(pin.root)
    if (/^[a-z0-9]{20,}$/i.test(ref)) return parseCid(ref)
    throw new NotFoundError(`"${ref}" is neither a CID nor the name of a root in the store`)
  }

  /** A line for people (stdout); silent with --json. */
  say (line: string): void {
    this.progress.clear()
    if (!this.json) process.stdout.write(line + '\n')
  }

  /** A note for people on stderr; silent with --json. */
  note (line: string): void {
    this.progress.clear()
    if (!this.json) process.stderr.write(line + '\n')
  }

  /** One NDJSON line (only with --json). */
  emit (object: unknown): void {
    if (this.json) process.stdout.write(JSON.stringify(object) + '\n')
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

export function resolveDataDir (flag?: string): string {
  const dir = flag ?? process.env.COLLECTIVE_DATA_DIR
  if (dir != null && dir !== '') return resolve(dir)
  return envPaths('collective-peer', { suffix: '' }).data
}
