import { existsSync } from 'node:fs'
import { join } from 'node:path'
// The runtime itself is loaded only to run a VM here: through a daemon, `run` starts in ~0.1 s.
import { VmDir } from '../../runtime/vm-dir.js'
import { followFile } from '../../runtime/console.js'
import { stopVm, STOP_TIMEOUT } from '../../runtime/vm-control.js'
import type { VmEvent } from '../../runtime/interface.js'
import { CONTROL_SOCKET } from '../../daemon/interface.js'
import { daemonAnswers, runInDaemon } from '../../daemon/control.js'
import { UsageError } from '../../errors.js'
import { VM_HELP, VM_OPTIONS, VM_USAGE, describeVmEvent, positiveInt, specFromFlags, vmArgv, vmEventSink } from '../vm-flags.js'
import { RECORD_HELP, RECORD_OPTIONS, RECORD_USAGE, awaitProfileFile, describeProfile, recordArgv, recordOptions } from '../record-flags.js'
import type { Command } from '../command.js'
import type { Context } from '../context.js'
import type { Output } from '../progress.js'

/** How long (× 100 ms) `run` waits for the daemon to record how QEMU exited once it is gone. */
const EXIT_STATE_POLLS = 150

interface Started { name: string, pid: number, accel: string, console: string, consoleStart: number }

/** Prints the console from `from` until the VM exits; Ctrl-C powers the guest off (then follows to the end). */
async function follow (ctx: Context, name: string, from: number, stop: () => Promise<unknown>, exited: Promise<unknown>): Promise<void> {
  const onAbort = (): void => { void stop().catch(() => {}) }
  ctx.signal.addEventListener('abort', onAbort, { once: true })
  try {
    const dir = new VmDir(ctx.dataDir, name)
    await followFile(dir.console, from, async bytes => { if (!ctx.json) await ctx.write(bytes) }, { until: exited })
  } finally {
    ctx.signal.removeEventListener('abort', onAbort)
  }
}

/** With a daemon: it starts the VM (`start`) and serves its disk; we show the console from here. */
async function runThroughDaemon (ctx: Context, socket: string, ref: string, values: Record<string, unknown>, stopTimeout: number): Promise<number> {
  let partial = ''
  let started: Started | undefined
  const stdout: Output = {
    isTTY: false,
    write: chunk => {
      partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')
      const lines = partial.split('\n')
      partial = lines.pop()!
      for (const line of lines) {
        let event: any
        try { event = JSON.parse(line) } catch { continue }
        if (ctx.json) ctx.io.stdout.write(line + '\n')
        else if (typeof event.type === 'string') { const text = describeVmEvent(event as VmEvent); if (text != null) ctx.note(text) }
        if (event.consoleStart != null) started = event as Started
      }
      return true
    }
  }
  const record = recordOptions(ctx, values)
  const since = Date.now()
  const argv = ['--data-dir', ctx.dataDir, 'start', ...vmArgv(ref, values), ...recordArgv(record), '--json']
  const code = await runInDaemon(socket, { argv, cwd: ctx.io.cwd, tty: { stdout: false, stderr: ctx.io.stderr.isTTY === true } }, { stdout, stderr: ctx.io.stderr }, ctx.signal)
  if (code !== 0 || started == null) return code === 0 ? 1 : code
  if (values.detach === true) {
    ctx.say(started.name)
    return 0
  }
  const dir = new VmDir(ctx.dataDir, started.name)
  const exited = (async () => { while (await dir.running() != null) await new Promise(resolve => setTimeout(resolve, 250)) })()
  await follow(ctx, started.name, started.consoleStart, async () => await stopVm(ctx.dataDir, started!.name, { timeoutMs: stopTimeout }), exited)
  // QEMU is gone (or a zombie) a moment before the daemon has reaped it and written how it exited.
  let exit = await dir.readExit()
  for (let i = 0; exit == null && i < EXIT_STATE_POLLS; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    exit = await dir.readExit()
  }
  // The daemon writes the profile when its recording ends: at the marker, or once it saw QEMU exit.
  const profile = record == null ? undefined : await awaitProfileFile(record.file, since, { timeoutMs: 30_000 })
  if (record != null && profile == null) ctx.note(`boot profile: the daemon wrote no ${record.file} (see its log)`)
  if (profile != null) ctx.note(describeProfile(profile))
  ctx.result({ name: started.name, exitCode: exit?.code ?? null, signal: exit?.signal ?? null, ...(profile != null ? { profile } : {}) })
  return exit?.code === 0 && (record == null || profile != null) ? 0 : 1
}

/** Without a daemon: this process serves the disk over NBD for as long as the VM runs. */
async function runHere (ctx: Context, ref: string, values: Record<string, unknown>, stopTimeout: number): Promise<number> {
  if (values.detach === true) throw new UsageError('--detach needs a running daemon to serve the disk (start one: collective-peer daemon)')
  const record = recordOptions(ctx, values)
  const spec = await specFromFlags(ctx, ref, values)
  const { Runtime } = await import('../../runtime/service.js')
  const runtime = new Runtime({ store: await ctx.openStore(), dataDir: ctx.dataDir })
  await runtime.start()
  try {
    const sink = vmEventSink(ctx)
    let exitEvent: VmEvent | undefined
    // The exit is told after the console's last lines, not in the middle of them.
    const onEvent = (event: VmEvent): void => { if (event.type === 'vm:exited') exitEvent = event; else sink(event) }
    const vm = await runtime.run(spec, { fresh: values.fresh === true, signal: ctx.signal, onEvent, record })
    await follow(ctx, spec.name, vm.consoleStart, async () => { await vm.stop({ timeoutMs: stopTimeout }) }, vm.exited)
    const exit = await vm.exited
    if (exitEvent != null) sink(exitEvent)
    const profile = await vm.profile
    if (profile != null) ctx.note(describeProfile(profile))
    ctx.result({ name: spec.name, exitCode: exit.code, signal: exit.signal, ...(profile != null ? { profile } : {}) })
    return exit.code === 0 ? 0 : 1
  } finally {
    await runtime.stop()
  }
}

const command: Command = {
  usage: `run ${VM_USAGE} [--detach] [--stop-timeout SECONDS] ${RECORD_USAGE}`,
  summary: 'Boot a disk under QEMU: the disk is served from the store over NBD (read-only), guest writes go to a copy-on-write layer kept across runs. Prints the serial console until the VM stops; Ctrl-C shuts it down.',
  help: `Options:
${VM_HELP}
  --detach              start it and return (needs a running daemon, which serves the disk)
  --stop-timeout SECS   on Ctrl-C: how long the guest gets to power off before QEMU is killed (default 30)
${RECORD_HELP}
With a daemon, the daemon runs the VM (see: start); without one, this process serves the disk until the VM stops.
An appliance whose manifest has a boot profile prefetches the ranges it lists first (with a daemon).
JSON: {"type": "vm:..."} events, then {"name", "exitCode", "signal", "profile"?: {"file", "reads", "bytes"}} (or start's result with --detach).`,
  options: { ...VM_OPTIONS, ...RECORD_OPTIONS, detach: { type: 'boolean' }, 'stop-timeout': { type: 'string' } },
  positionals: 1,
  async run (ctx, [ref], values) {
    const stopTimeout = positiveInt(values['stop-timeout'], '--stop-timeout', STOP_TIMEOUT / 1000) * 1000
    const socket = join(ctx.dataDir, CONTROL_SOCKET)
    if (existsSync(socket) && await daemonAnswers(socket)) return await runThroughDaemon(ctx, socket, ref!, values, stopTimeout)
    return await runHere(ctx, ref!, values, stopTimeout)
  }
}

export default command
