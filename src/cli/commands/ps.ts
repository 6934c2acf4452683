import { formatBytes, listVms, type VmInfo } from '../../runtime/index.js'
import type { Command } from '../command.js'

function uptime (started: string | undefined): string {
  if (started == null) return '-'
  const s = Math.max(0, Math.round((Date.now() - Date.parse(started)) / 1000))
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.round(s / 60)}m`
  return `${Math.round(s / 3600)}h`
}

function row (vm: VmInfo): string[] {
  const forwards = vm.spec.forwards.map(f => `${f.hostPort}->${f.guestPort}${f.protocol === 'udp' ? '/udp' : ''}`).join(',')
  return [vm.name, vm.state, vm.pid != null ? String(vm.pid) : '-', vm.accel ?? '-', formatBytes(vm.spec.memory), String(vm.spec.cpus),
    uptime(vm.started), formatBytes(vm.layerBytes), vm.spec.disks[0]?.root.slice(-12) ?? '-', forwards || '-']
}

const command: Command = {
  usage: 'ps [--all]',
  summary: 'List VMs: state, QEMU pid, accelerator, memory, CPUs, uptime, copy-on-write layer size, disk, port forwards.',
  help: `Options:
  --all   also list stopped VMs (they keep their layer until: collective-peer reset <vm>)
JSON: {"vms": [{"name", "state", "pid", "accel", "started", "spec", "layerBytes", "console"}]}`,
  options: { all: { type: 'boolean' } },
  async run (ctx, _positionals, values) {
    const vms = (await listVms(ctx.dataDir)).filter(vm => values.all === true || vm.state === 'running')
    if (!ctx.json) {
      const rows = [['NAME', 'STATE', 'PID', 'ACCEL', 'MEMORY', 'CPUS', 'UPTIME', 'LAYER', 'DISK', 'FORWARDS'], ...vms.map(row)]
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
      for (const r of rows) ctx.say(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd())
    }
    ctx.result({ vms })
  }
}

export default command
