import { NoDaemonError } from '../../daemon/interface.js'
import { UsageError } from '../../errors.js'
import { VM_HELP, VM_OPTIONS, VM_USAGE, specFromFlags, vmEventSink } from '../vm-flags.js'
import type { Runtime } from '../../runtime/index.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: `start ${VM_USAGE}`,
  summary: 'Start a VM in the daemon and return (what run --detach does): the daemon serves its disk and keeps it running.',
  help: `Options:\n${VM_HELP}\nJSON: {"type": "vm:..."} events, then {"name", "pid", "accel", "console", "consoleStart"}.`,
  options: VM_OPTIONS,
  positionals: 1,
  async run (ctx, [ref], values) {
    if (ctx.daemon == null) throw new NoDaemonError(ctx.dataDir)
    const runtime = ctx.daemon.service<Runtime>('nbd')
    if (runtime == null) throw new UsageError('this daemon runs no NBD service: restart it with this version')
    const spec = await specFromFlags(ctx, ref!, values)
    const vm = await runtime.run(spec, { fresh: values.fresh === true, signal: ctx.signal, onEvent: vmEventSink(ctx) })
    ctx.say(spec.name)
    ctx.result({ name: spec.name, pid: vm.pid, accel: vm.accel, console: vm.dir.console, consoleStart: vm.consoleStart })
  }
}

export default command
