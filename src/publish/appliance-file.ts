import { readFile, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fromSystemError } from '../errors.js'
import { InvalidManifestError, type ConfigParam, type PortForward } from './interface.js'

/** What a publisher writes (`appliance.json`); paths are relative to the file. */
export interface ApplianceFile {
  name: string
  disks: Array<{ name: string, role: 'program' | 'user', image: string }>
  vm: {
    memory: number
    cpus: number
    kernel?: string
    initrd?: string
    cmdline?: string
    forwards: PortForward[]
  }
  config: ConfigParam[]
  /** A boot profile file (`run --record-profile`). */
  bootProfile?: string
}

const MAX_FILE = 1024 * 1024

function memory (v: unknown, file: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v
  const m = typeof v === 'string' ? /^(\d+)\s*([KMGT]?)i?B?$/i.exec(v.trim()) : null
  if (m == null) throw new InvalidManifestError(`${file}: vm.memory "${String(v)}" is not a size (e.g. 512M, 2G)`)
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T']
  return Number(m[1]) * unit
}

function forwards (v: unknown, file: string): PortForward[] {
  if (v == null) return []
  if (!Array.isArray(v)) throw new InvalidManifestError(`${file}: vm.forwards must be a list like ["2222:22"]`)
  return v.map(f => {
    const m = typeof f === 'string' ? /^(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(f) : null
    if (m == null) throw new InvalidManifestError(`${file}: forward "${String(f)}" is not HOST:GUEST[/tcp|udp]`)
    return { host: Number(m[1]), guest: Number(m[2]), proto: (m[3] ?? 'tcp') as 'tcp' | 'udp' }
  })
}

/** Reads and checks an appliance file; image paths come back absolute. */
export async function readApplianceFile (path: string): Promise<ApplianceFile> {
  let text: string
  try {
    if ((await stat(path)).size > MAX_FILE) throw new InvalidManifestError(`${path}: larger than ${MAX_FILE} bytes`)
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw fromSystemError(err, path)
  }
  let v: any
  try {
    v = JSON.parse(text)
  } catch (err) {
    throw new InvalidManifestError(`${path}: not valid JSON (${(err as Error).message})`)
  }
  const fail = (why: string): never => { throw new InvalidManifestError(`${path}: ${why}`) }
  if (v == null || typeof v !== 'object') fail('expected a JSON object')
  if (typeof v.name !== 'string') fail('"name" is missing')
  if (!Array.isArray(v.disks) || v.disks.length === 0) fail('"disks" must list at least one disk')
  const base = dirname(resolve(path))
  const rel = (p: unknown, field: string): string => {
    if (typeof p !== 'string' || p === '') fail(`${field} must be a file path`)
    return resolve(base, p as string)
  }
  const disks = v.disks.map((d: any, i: number) => {
    if (d == null || typeof d !== 'object') fail(`disks[${i}] must be an object`)
    const role = d.role ?? 'program'
    if (role !== 'program' && role !== 'user') fail(`disks[${i}].role must be "program" or "user"`)
    return { name: String(d.name ?? `disk${i}`), role, image: rel(d.image, `disks[${i}].image`) }
  })
  const vm = v.vm ?? {}
  const config: ConfigParam[] = Object.entries(v.config ?? {}).map(([name, p]: [string, any]) => ({
    name,
    type: p?.type ?? 'string',
    default: p?.default,
    description: p?.description,
    secret: p?.secret === true
  }))
  return {
    name: v.name,
    disks,
    vm: {
      memory: memory(vm.memory ?? '512M', path),
      cpus: vm.cpus ?? 1,
      kernel: vm.kernel != null ? rel(vm.kernel, 'vm.kernel') : undefined,
      initrd: vm.initrd != null ? rel(vm.initrd, 'vm.initrd') : undefined,
      cmdline: vm.cmdline,
      forwards: forwards(vm.forwards, path)
    },
    config,
    bootProfile: v.bootProfile != null ? rel(v.bootProfile, 'bootProfile') : undefined
  }
}
