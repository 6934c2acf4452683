import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkVmName } from './spec.js'
import type { VmInfo, VmSpec } from './interface.js'

/** The NBD socket of a data dir (one server per data dir: the daemon's, or a `run` process's). */
export const NBD_SOCKET = 'nbd.sock'

/** What a VM was last run with: its spec and the disk root each layer was made over. */
export interface VmRecord {
  spec: VmSpec
  /** `layers[i]` is the root CID disk i's layer sits on (a layer over another root is refused). */
  layers: string[]
  created: string
}

/** Written while QEMU runs (by the process that owns it), removed when it exits. */
export interface VmRunState {
  pid: number
  accel: 'kvm' | 'tcg'
  started: string
  /** The process that started QEMU and serves its disks (the daemon or a `run`). */
  owner: number
}

/** How QEMU last exited (written by the owner before it removes `run.json`). */
export interface VmExitState {
  code: number | null
  signal: string | null
  at: string
}

/**
 * A VM's folder, `<data-dir>/vms/<name>/`: `vm.json` (VmRecord), `run.json` (VmRunState while it runs),
 * `disk<i>.qcow2` (copy-on-write layers), `console.log` (serial console, appended across runs),
 * `console.sock` and `qmp.sock` (QEMU's, while it runs), `exit.json` (VmExitState), `boot/<cid>` (kernel and initrd files).
 * Any process can read it: `ps`, `stop` and `console` need no store and no daemon.
 */
export class VmDir {
  readonly name: string
  readonly path: string

  constructor (dataDir: string, name: string) {
    this.name = checkVmName(name)
    this.path = join(vmsDir(dataDir), name)
  }

  get record (): string { return join(this.path, 'vm.json') }
  get runState (): string { return join(this.path, 'run.json') }
  get exitState (): string { return join(this.path, 'exit.json') }
  get console (): string { return join(this.path, 'console.log') }
  get consoleSocket (): string { return join(this.path, 'console.sock') }
  get qmpSocket (): string { return join(this.path, 'qmp.sock') }
  get bootDir (): string { return join(this.path, 'boot') }
  layer (disk: number): string { return join(this.path, `disk${disk}.qcow2`) }

  async create (): Promise<void> {
    await mkdir(this.bootDir, { recursive: true, mode: 0o700 })
  }

  async exists (): Promise<boolean> {
    return await stat(this.record).then(() => true, () => false)
  }

  async readRecord (): Promise<VmRecord | undefined> {
    return await readJson<VmRecord>(this.record)
  }

  async writeRecord (record: VmRecord): Promise<void> {
    await writeJson(this.record, record)
  }

  /** The run state if QEMU still runs (a state left by a killed owner is ignored). */
  async running (): Promise<VmRunState | undefined> {
    const state = await readJson<VmRunState>(this.runState)
    if (state == null || !isQemuOf(state.pid, this.name)) return undefined
    return state
  }

  async writeRunState (state: VmRunState): Promise<void> {
    await writeJson(this.runState, state)
  }

  async writeExit (exit: VmExitState): Promise<void> {
    await writeJson(this.exitState, exit)
  }

  async readExit (): Promise<VmExitState | undefined> {
    return await readJson<VmExitState>(this.exitState)
  }

  /** Removes what only makes sense while QEMU runs. */
  async clearRunState (): Promise<void> {
    await Promise.all([this.runState, this.qmpSocket, this.consoleSocket].map(async p => { await rm(p, { force: true }) }))
  }

  async layerBytes (count: number): Promise<number> {
    let total = 0
    for (let i = 0; i < count; i++) {
      const s = await stat(this.layer(i)).catch(() => undefined)
      if (s != null) total += s.blocks * 512
    }
    return total
  }

  async info (): Promise<VmInfo | undefined> {
    const record = await this.readRecord()
    if (record == null) return undefined
    const run = await this.running()
    return {
      name: this.name,
      state: run != null ? 'running' : 'stopped',
      pid: run?.pid,
      accel: run?.accel,
      started: run?.started,
      spec: record.spec,
      layerBytes: await this.layerBytes(record.spec.disks.length),
      console: this.console
    }
  }
}

export function vmsDir (dataDir: string): string { return join(dataDir, 'vms') }

/** Every VM of a data dir, by name. */
export async function listVms (dataDir: string): Promise<VmInfo[]> {
  const names = await readdir(vmsDir(dataDir)).catch(() => [] as string[])
  const out: VmInfo[] = []
  for (const name of names.sort()) {
    let dir: VmDir
    try { dir = new VmDir(dataDir, name) } catch { continue }
    const info = await dir.info()
    if (info != null) out.push(info)
  }
  return out
}

/** Whether `pid` is a live QEMU started for VM `name` (not a reused pid, not a zombie). */
export function isQemuOf (pid: number, name: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    if (/\) Z /.test(stat)) return false
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    return cmdline.some(arg => arg === `guest=${name},debug-threads=on`)
  } catch {
    return false
  }
}

/**
 * Whether `pid` is a process on its way out: killed, its memory (and with it its command line)
 * already released, but not yet a zombie. Freeing a guest's RAM takes a while (tens of ms on a busy
 * host), and meanwhile `isQemuOf` no longer recognises the QEMU that is still exiting.
 */
export function isExiting (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    if (/\) [ZX] /.test(stat)) return false
    return readFileSync(`/proc/${pid}/cmdline`).length === 0
  } catch {
    return false
  }
}

async function readJson<T> (path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T
  } catch {
    return undefined
  }
}

/** Written to a temporary file and renamed: a reader never sees half a file. */
async function writeJson (path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 })
  await rename(tmp, path)
}
