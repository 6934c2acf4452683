import { NoDaemonError } from '../../daemon/interface.js'
import { UsageError } from '../../errors.js'
import { VM_HELP, VM_OPTIONS, VM_USAGE, specFromFlags, vmEventSink } from '../vm-flags.js'
import { RECORD_HELP, RECORD_OPTIONS, RECORD_USAGE, describeProfile, recordOptions } from '../record-flags.js'
import { logger } from '@libp2p/logger'
import type { Runtime } from '../../runtime/index.js'
import type { Command } from '../command.js'

const log = logger('collective:runtime')

const command: Command = {
  usage: `start ${VM_USAGE} ${RECORD_USAGE}`,
  summary: 'Start a VM in the daemon and return (what run --detach does): the daemon serves its disk and keeps it running.',
  help: `Options:\n${VM_HELP}\n${RECORD_HELP}\nThe daemon writes the boot profile when the recording ends.\nJSON: {"type": "vm:..."} events, then {"name", "pid", "accel", "console", "consoleStart"}.`,
  options: { ...VM_OPTIONS, ...RECORD_OPTIONS },
  positionals: 1,
  async run (ctx, [ref], values) {
    if (ctx.daemon == null) throw new NoDaemonError(ctx.dataDir)
    const runtime = ctx.daemon.service<Runtime>('nbd')
    if (runtime == null) throw new UsageError('this daemon runs no NBD service: restart it with this version')
    const record = recordOptions(ctx, values)
    const spec = await specFromFlags(ctx, ref!, values)
    const vm = await runtime.run(spec, { fresh: values.fresh === true, signal: ctx.signal, onEvent: vmEventSink(ctx), record })
    // The recording outlives this command: the daemon writes the file when it ends.
    vm.profile?.then(p => { log(describeProfile(p)) }, err => { log('boot profile of %s: %s', spec.name, (err as Error).message) })
    ctx.say(spec.name)
    ctx.result({ name: spec.name, pid: vm.pid, accel: vm.accel, console: vm.dir.console, consoleStart: vm.consoleStart })
  }
}

export default command
