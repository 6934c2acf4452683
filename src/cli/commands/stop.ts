import { runningVms, stopVm, STOP_TIMEOUT } from '../../runtime/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'stop <vm>|--all [--timeout SECONDS]',
  summary: 'Shut a VM down: the ACPI power button (the guest powers off cleanly), then QEMU is killed after the timeout.',
  help: `Options:
  --all               every running VM
  --timeout SECONDS   how long the guest gets to power off (default 30)
JSON: {"stopped": [{"name", "outcome": "powered-off" | "killed" | "not-running"}]}`,
  options: { all: { type: 'boolean' }, timeout: { type: 'string' } },
  positionals: [0, 1],
  async run (ctx, [name], values) {
    if ((name == null) === (values.all !== true)) throw new UsageError('usage: collective-peer stop <vm>|--all')
    let timeoutMs = STOP_TIMEOUT
    if (values.timeout != null) {
      const n = Number(values.timeout)
      if (!Number.isFinite(n) || n < 0) throw new UsageError('--timeout must be a number of seconds')
      timeoutMs = n * 1000
    }
    const names = name != null ? [name] : await runningVms(ctx.dataDir)
    const stopped = await Promise.all(names.map(async vm => ({ name: vm, outcome: await stopVm(ctx.dataDir, vm, { timeoutMs, signal: ctx.signal }) })))
    for (const s of stopped) ctx.say(`${s.name}: ${s.outcome.replace('-', ' ')}`)
    ctx.result({ stopped })
  }
}

export default command
