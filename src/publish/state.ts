import { appendFile, mkdir, open, readFile, readdir, rename } from 'node:fs/promises'
import { join } from 'node:path'
import { fromSystemError, isSystemError } from '../errors.js'
import { ApplianceNotFoundError } from './interface.js'
import type { TrustedKeys } from './signing.js'

/** Where appliance state lives: `<dataDir>/appliances/<id>/state.json`, `v<N>.manifest`, and `log.ndjson`. */
export const APPLIANCES_DIR = 'appliances'

export interface VersionRecord {
  version: number
  created: number
  expires: number
  /** All of its disks and blobs are in the store and pinned. */
  fetched: boolean
  /** Pin names holding its disks and blobs. */
  pins: string[]
}

/** What this host knows of one appliance. Written atomically (fsync, rename) before it is acted on. */
export interface ApplianceState {
  id: string
  name: string
  /** Follow announcements and fetch new versions. */
  subscribed: boolean
  /** This host publishes it (its keys sign it). */
  published: boolean
  /** `subscribe --key`: a fingerprint the genesis keys must include. */
  requireKey?: string
  /** The keys trusted now (base64 protobuf), after the rotations applied so far. */
  trust?: { keys: string[], threshold: number, seq: number }
  /** The highest verified version seen: nothing at or below it is ever accepted again. */
  lastVersion: number
  versions: VersionRecord[]
  /** The version in use, and the one `rollback` returns to. */
  current?: number
  previous?: number
}

export interface LogEvent {
  time: string
  type: 'accepted' | 'refused' | 'fetched' | 'failed' | 'published' | 'rollback' | 'subscribed' | 'pruned'
  id: string
  version?: number
  source?: string
  code?: string
  reason?: string
  bytesFetched?: number
}

export function toTrusted (t: NonNullable<ApplianceState['trust']>): TrustedKeys {
  return { keys: t.keys.map(k => new Uint8Array(Buffer.from(k, 'base64'))), threshold: t.threshold, seq: t.seq }
}

export function fromTrusted (t: TrustedKeys): NonNullable<ApplianceState['trust']> {
  return { keys: t.keys.map(k => Buffer.from(k).toString('base64')), threshold: t.threshold, seq: t.seq }
}

/** Durable write: a crash leaves the old file or the new one, never half of either. */
export async function writeAtomic (path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`
  const fd = await open(tmp, 'w', mode)
  try {
    await fd.writeFile(data)
    await fd.sync()
  } finally {
    await fd.close()
  }
  await rename(tmp, path)
  const dir = await open(join(path, '..'), 'r')
  try { await dir.sync() } finally { await dir.close() }
}

export class Appliances {
  readonly dir: string

  constructor (dataDir: string) {
    this.dir = join(dataDir, APPLIANCES_DIR)
  }

  private folder (id: string): string {
    if (!/^[a-z0-9]{20,100}$/.test(id)) throw new ApplianceNotFoundError(`"${id}" is not an appliance id`)
    return join(this.dir, id)
  }

  async get (id: string): Promise<ApplianceState | undefined> {
    try {
      return JSON.parse(await readFile(join(this.folder(id), 'state.json'), 'utf8')) as ApplianceState
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return undefined
      throw fromSystemError(err, id)
    }
  }

  async require (id: string): Promise<ApplianceState> {
    const state = await this.get(id)
    if (state == null) throw new ApplianceNotFoundError(`appliance ${id} is unknown here (subscribe to it first)`)
    return state
  }

  async save (state: ApplianceState): Promise<void> {
    const folder = this.folder(state.id)
    try {
      await mkdir(folder, { recursive: true, mode: 0o700 })
      await writeAtomic(join(folder, 'state.json'), JSON.stringify(state, null, 2))
    } catch (err) {
      throw fromSystemError(err, join(folder, 'state.json'))
    }
  }

  async list (): Promise<ApplianceState[]> {
    let ids: string[]
    try {
      ids = (await readdir(this.dir, { withFileTypes: true })).filter(d => d.isDirectory()).map(d => d.name)
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return []
      throw fromSystemError(err, this.dir)
    }
    const out: ApplianceState[] = []
    for (const id of ids.sort()) {
      const state = await this.get(id).catch(() => undefined)
      if (state != null) out.push(state)
    }
    return out
  }

  async saveEnvelope (id: string, version: number, envelope: Uint8Array): Promise<void> {
    const folder = this.folder(id)
    await mkdir(folder, { recursive: true, mode: 0o700 })
    await writeAtomic(join(folder, `v${version}.manifest`), envelope)
  }

  async envelope (id: string, version: number): Promise<Uint8Array> {
    try {
      return await readFile(join(this.folder(id), `v${version}.manifest`))
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new ApplianceNotFoundError(`version ${version} of ${id} is not on this host`)
      throw fromSystemError(err, id)
    }
  }

  async log (event: Omit<LogEvent, 'time'>): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    await appendFile(join(this.dir, 'log.ndjson'), JSON.stringify({ time: new Date().toISOString(), ...event }) + '\n', { mode: 0o600 })
  }

  async readLog (): Promise<LogEvent[]> {
    try {
      const text = await readFile(join(this.dir, 'log.ndjson'), 'utf8')
      return text.split('\n').filter(l => l !== '').map(l => JSON.parse(l) as LogEvent)
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return []
      throw fromSystemError(err, this.dir)
    }
  }
}
