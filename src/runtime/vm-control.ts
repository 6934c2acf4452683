import { rm, stat } from 'node:fs/promises'
import { Qmp } from './qemu/qmp.js'
import { VmDir, isExiting, isQemuOf, listVms } from './vm-dir.js'
import { VmNotFoundError, VmRunningError } from './errors.js'
import { AbortError } from '../errors.js'

/** How long `stop` waits for the guest to power off after the ACPI button before killing QEMU. @default 30 s */
export const STOP_TIMEOUT = 30_000
const POLL_MS = 100

export type StopOutcome = 'powered-off' | 'killed' | 'not-running'

/**
 * Resolves true once QEMU `pid` (of VM `name`) is gone (exited, or a zombie), false after `timeoutMs`.
 * Not as soon as it stops looking like QEMU: a killed QEMU releases its memory, and with it its command
 * line, before it is done exiting (see isExiting).
 */
export async function waitForExit (pid: number, name: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isQemuOf(pid, name) || isExiting(pid)) {
    if (Date.now() >= deadline) return false
    if (signal?.aborted === true) throw new AbortError()
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
  return true
}

/**
 * Stops a VM from any process: the ACPI power button through QMP (the guest shuts down cleanly and
 * QEMU exits), then, after `timeoutMs`, SIGTERM and SIGKILL. The process that owns QEMU sees it exit
 * and cleans up (sockets, run state).
 */
export async function stopVm (dataDir: string, name: string, options: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<StopOutcome> {
  const dir = new VmDir(dataDir, name)
  if (!await dir.exists()) throw new VmNotFoundError(name)
  const run = await dir.running()
  if (run == null) return 'not-running'
  try {
    const qmp = await Qmp.connect(dir.qmpSocket, { timeoutMs: 5_000 })
    try { await qmp.execute('system_powerdown') } finally { qmp.close() }
  } catch {
    // No QMP (QEMU wedged, socket gone): go straight to signals.
  }
  if (await waitForExit(run.pid, name, options.timeoutMs ?? STOP_TIMEOUT, options.signal)) return 'powered-off'
  await kill(run.pid, name, 'SIGTERM')
  if (await waitForExit(run.pid, name, 5_000, options.signal)) return 'killed'
  await kill(run.pid, name, 'SIGKILL')
  await waitForExit(run.pid, name, 10_000, options.signal)
  return 'killed'
}

async function kill (pid: number, name: string, signal: NodeJS.Signals): Promise<void> {
  if (!isQemuOf(pid, name)) return
  try { process.kill(pid, signal) } catch {}
}

/** Every running VM's name (for `stop --all`). */
export async function runningVms (dataDir: string): Promise<string[]> {
  return (await listVms(dataDir)).filter(vm => vm.state === 'running').map(vm => vm.name)
}

/** Discards a stopped VM's copy-on-write layers: its next run starts from the publisher's disks. */
export async function resetVm (dataDir: string, name: string): Promise<{ layers: number }> {
  const dir = new VmDir(dataDir, name)
  const record = await dir.readRecord()
  if (record == null) throw new VmNotFoundError(name)
  if (await dir.running() != null) throw new VmRunningError(`VM "${name}" is running: stop it first (collective-peer stop ${name})`)
  let layers = 0
  for (let i = 0; i < Math.max(record.spec.disks.length, record.layers.length); i++) {
    const path = dir.layer(i)
    const existed = await stat(path).then(() => true, () => false)
    await rm(path, { force: true })
    if (existed) layers++
  }
  await dir.writeRecord({ ...record, layers: [] })
  return { layers }
}

/**
 * Kills QEMU processes whose owner (a daemon or `run` that served their disks) died without stopping
 * them: their disks are gone, so they cannot do anything useful. Run when a new owner starts.
 */
export async function reapOrphans (dataDir: string): Promise<string[]> {
  const reaped: string[] = []
  for (const vm of await listVms(dataDir)) {
    if (vm.state !== 'running' || vm.pid == null) continue
    const dir = new VmDir(dataDir, vm.name)
    const state = await dir.running()
    if (state == null || isAlive(state.owner)) continue
    await kill(state.pid, vm.name, 'SIGKILL')
    await waitForExit(state.pid, vm.name, 5_000)
    await dir.clearRunState()
    reaped.push(vm.name)
  }
  return reaped
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
