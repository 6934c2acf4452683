import { spawn, type ChildProcess } from 'node:child_process'
import { open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { qemuArgs } from './qemu/args.js'
import { findQemu } from './qemu/tools.js'
import { probeKvm } from './qemu/kvm-probe.js'
import { Qmp } from './qemu/qmp.js'
import { createLayer, layerExists } from './qemu/layer.js'
import { exportBootFile } from './boot-files.js'
import { checkSpec } from './spec.js'
import { VmDir, type VmRecord } from './vm-dir.js'
import { STOP_TIMEOUT, stopVm } from './vm-control.js'
import { KvmUnavailableError, LayerMismatchError, QemuFailedError, VmRunningError } from './errors.js'
import { parseCid } from '../dag/hash.js'
import { NotFoundError } from '../errors.js'
import type { DiskExports, ExportBlocks } from './disk-exports.js'
import type { Pins } from '../store/index.js'
import type { VmEvent, VmSpec } from './interface.js'
import type { CID } from 'multiformats/cid'

const log = logger('collective:runtime')

/** How long QEMU may take to open its QMP socket before the launch counts as failed. */
const START_TIMEOUT = 30_000

/** What launching needs from its host process. */
export interface LaunchContext {
  dataDir: string
  /** Where the blocks of a root come from (the store; with lazy boot, the swarm behind it). */
  blocksFor(root: CID): ExportBlocks
  /** Makes a whole root local before it is needed in full (a kernel, an initrd); absent: no swarm. */
  prefetch?(root: CID, options?: { signal?: AbortSignal }): Promise<void>
  pins: Pins
  exports: DiskExports
  /** The NBD server's socket (the exports are served there while the VM runs). */
  nbdSocket: string
}

export interface LaunchOptions {
  /** Discard the VM's copy-on-write layers first (start from the publisher's disks). */
  fresh?: boolean
  signal?: AbortSignal
  onEvent?(event: VmEvent): void
}

export interface VmExit { code: number | null, signal: string | null }

/** A VM whose QEMU this process started (and whose disks it serves). */
export interface RunningVm {
  readonly name: string
  readonly pid: number
  readonly accel: 'kvm' | 'tcg'
  readonly dir: VmDir
  /** Where this run's console output starts in `console.log` (the log is appended across runs). */
  readonly consoleStart: number
  readonly exited: Promise<VmExit>
  /** ACPI shutdown, then kill after `timeoutMs`; resolves once QEMU has exited. */
  stop(options?: { timeoutMs?: number }): Promise<void>
}

async function chooseAccel (qemu: string, wanted: VmSpec['accel'], onEvent: (e: VmEvent) => void): Promise<'kvm' | 'tcg'> {
  if (wanted === 'tcg') {
    onEvent({ type: 'vm:accel', accel: 'tcg', reason: 'asked for (--accel tcg)' })
    return 'tcg'
  }
  const probe = await probeKvm(qemu)
  if (probe.usable) {
    onEvent({ type: 'vm:accel', accel: 'kvm', reason: probe.reason })
    return 'kvm'
  }
  if (wanted === 'kvm') throw new KvmUnavailableError(`KVM does not work here: ${probe.reason} (use --accel tcg or auto)`)
  onEvent({ type: 'vm:accel', accel: 'tcg', reason: probe.reason })
  return 'tcg'
}

/** The copy-on-write layer of each disk: kept across runs, made when missing (or `fresh`). */
async function prepareLayers (ctx: LaunchContext, dir: VmDir, spec: VmSpec, record: VmRecord | undefined, qemuImg: string, options: LaunchOptions): Promise<string[]> {
  const layers: string[] = []
  for (const [i, disk] of spec.disks.entries()) {
    const path = dir.layer(i)
    if (options.fresh === true) await rm(path, { force: true })
    const exists = await layerExists(path)
    if (exists && record?.layers[i] != null && record.layers[i] !== disk.root) {
      throw new LayerMismatchError(`VM "${spec.name}" has a writable layer over disk ${record.layers[i]}, not ${disk.root}: run with --fresh to discard it (or collective-peer reset ${spec.name})`)
    }
    if (!exists) {
      const exp = await ctx.exports.get(parseCid(disk.root), { signal: options.signal })
      await createLayer(qemuImg, path, { uri: `nbd+unix:///${disk.root}?socket=${ctx.nbdSocket}`, size: exp.size }, options)
    }
    options.onEvent?.({ type: 'vm:layer', disk: i, path, created: !exists })
    layers.push(path)
  }
  return layers
}

/** Keeps what the VM needs from garbage collection while the VM exists (`vm:<name>:<part>`). */
async function pinParts (ctx: LaunchContext, spec: VmSpec, sizes: number[]): Promise<void> {
  const parts: Array<[string, string | undefined, number]> = spec.disks.map((d, i) => [`disk${i}`, d.root, sizes[i] ?? 0])
  parts.push(['kernel', spec.kernel, 0], ['initrd', spec.initrd, 0])
  for (const [part, root, size] of parts) {
    if (root == null) continue
    const name = `vm:${spec.name}:${part}`
    if ((await ctx.pins.get(name))?.root === root) continue
    await ctx.pins.set({ name, root, size, created: new Date().toISOString() })
  }
}

/** The first line of QEMU's stderr that says what went wrong. */
async function qemuError (path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '')
  const lines = text.split('\n').map(l => l.trim()).filter(l => l !== '')
  return lines.find(l => /error|fail|cannot|could not|invalid/i.test(l)) ?? lines[lines.length - 1] ?? 'no message'
}

async function waitForQmp (child: ChildProcess, path: string, stderrPath: string, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT
  while (true) {
    if (child.exitCode != null || child.signalCode != null) {
      throw new QemuFailedError(`QEMU exited at start (${child.exitCode ?? child.signalCode}): ${await qemuError(stderrPath)}`)
    }
    try {
      const qmp = await Qmp.connect(path, { timeoutMs: 2_000 })
      qmp.close()
      return
    } catch {}
    if (Date.now() > deadline) throw new QemuFailedError(`QEMU did not open its monitor within ${START_TIMEOUT / 1000} s`)
    if (signal?.aborted === true) throw new QemuFailedError('aborted while QEMU was starting')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/**
 * Starts a VM: checks the spec, makes or keeps its layers, writes its kernel/initrd out of the store,
 * picks the accelerator, starts QEMU and waits for its monitor. The disks must be served on
 * `ctx.nbdSocket` for as long as the VM runs.
 */
export async function launchVm (ctx: LaunchContext, spec: VmSpec, options: LaunchOptions = {}): Promise<RunningVm> {
  const onEvent = options.onEvent ?? (() => {})
  checkSpec(spec)
  const tools = await findQemu()
  const dir = new VmDir(ctx.dataDir, spec.name)
  await dir.create()
  if (await dir.running() != null) throw new VmRunningError(`VM "${spec.name}" is already running (collective-peer stop ${spec.name})`)
  await dir.clearRunState()
  await rm(dir.exitState, { force: true })

  const where = ctx.prefetch != null ? 'in the store or the swarm' : 'in the store (import or pull it first)'
  const sizes: number[] = []
  for (const disk of spec.disks) {
    const root = parseCid(disk.root)
    if (!await ctx.blocksFor(root).has(root)) throw new NotFoundError(`disk root ${disk.root} is not ${where}`)
    sizes.push((await ctx.exports.get(root, { signal: options.signal })).size)
  }
  const bootFile = async (blob: string | undefined): Promise<string | undefined> => {
    if (blob == null) return undefined
    const root = parseCid(blob)
    if (!await ctx.blocksFor(root).has(root)) throw new NotFoundError(`boot file ${blob} is not ${where}`)
    await ctx.prefetch?.(root, options)
    return await exportBootFile(ctx.blocksFor(root), blob, dir.bootDir, options)
  }
  const record = await dir.readRecord()
  // Independent steps at once: on a cold host the kernel and initrd come from the swarm, and the
  // accelerator probe starts a QEMU of its own.
  const [layers, kernel, initrd, accel] = await Promise.all([
    prepareLayers(ctx, dir, spec, record, tools.img, options),
    bootFile(spec.kernel),
    bootFile(spec.initrd),
    chooseAccel(tools.system, spec.accel, onEvent)
  ])
  await pinParts(ctx, spec, sizes)
  await dir.writeRecord({ spec, layers: spec.disks.map(d => d.root), created: record?.created ?? new Date().toISOString() })

  const consoleStart = await open(dir.console, 'a').then(async fd => { const { size } = await fd.stat(); await fd.close(); return size })
  const stderrPath = join(dir.path, 'qemu.log')
  const stderr = await open(stderrPath, 'w')
  const args = qemuArgs(spec, accel, { nbdSocket: ctx.nbdSocket, consoleLog: dir.console, consoleSocket: dir.consoleSocket, qmpSocket: dir.qmpSocket, layers, kernel, initrd })
  log('starting %s %s', tools.system, args.join(' '))
  // Its own process group: a Ctrl-C in the terminal reaches us, and we shut the guest down cleanly.
  const child = spawn(tools.system, args, { stdio: ['ignore', 'ignore', stderr.fd], detached: true })
  await stderr.close()
  const exited = new Promise<VmExit>(resolve => {
    child.once('exit', (code, sig) => { resolve({ code, signal: sig }) })
    child.once('error', () => { resolve({ code: null, signal: null }) })
  })
  try {
    await waitForQmp(child, dir.qmpSocket, stderrPath, options.signal)
  } catch (err) {
    if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
    await exited
    await dir.clearRunState()
    throw err
  }
  const pid = child.pid!
  const started = new Date().toISOString()
  await dir.writeRunState({ pid, accel, started, owner: process.pid })
  for (const disk of spec.disks) ctx.exports.retain(disk.root)
  onEvent({ type: 'vm:started', name: spec.name, pid, accel })
  const done = exited.then(async exit => {
    for (const disk of spec.disks) ctx.exports.release(disk.root)
    await dir.writeExit({ code: exit.code, signal: exit.signal, at: new Date().toISOString() }).catch(() => {})
    await dir.clearRunState().catch(() => {})
    onEvent({ type: 'vm:exited', name: spec.name, code: exit.code, signal: exit.signal })
    return exit
  })
  return {
    name: spec.name,
    pid,
    accel,
    dir,
    consoleStart,
    exited: done,
    stop: async (stopOptions = {}) => {
      await stopVm(ctx.dataDir, spec.name, { timeoutMs: stopOptions.timeoutMs ?? STOP_TIMEOUT })
      await done
    }
  }
}
