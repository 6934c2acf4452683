import { checkSpec, parseAccel, parseForward, parseMemory, type VmEvent, type VmSpec } from '../runtime/index.js'
import { UsageError } from '../errors.js'
import type { Options } from './command.js'
import type { Context } from './context.js'

/** The flags `run` and `start` share: they describe the VM (until a manifest does). */
export const VM_OPTIONS: Options = {
  kernel: { type: 'string' },
  initrd: { type: 'string' },
  cmdline: { type: 'string' },
  memory: { type: 'string' },
  cpus: { type: 'string' },
  accel: { type: 'string' },
  fresh: { type: 'boolean' },
  forward: { type: 'string', multiple: true },
  name: { type: 'string' }
}

export const VM_USAGE = '<cid|name> [--kernel <cid|name>] [--initrd <cid|name>] [--cmdline TEXT] [--memory 512M] [--cpus 1] [--accel auto|kvm|tcg] [--fresh] [--forward HOST:GUEST]... [--name VM]'

export const VM_HELP = `  --kernel <cid|name>   direct kernel boot: a kernel imported into the store (collective-peer import vmlinuz)
  --initrd <cid|name>   an initrd for it, likewise
  --cmdline TEXT        the kernel command line (default "console=ttyS0")
  --memory SIZE         guest memory, e.g. 512M, 2G (default 512M; at most what this host has)
  --cpus N              virtual CPUs (default 1)
  --accel auto|kvm|tcg  auto: KVM when a probe guest runs well under it, else TCG (default auto)
  --fresh               discard the VM's layer first: start from the published disk
  --forward [tcp:|udp:][ADDR:]HOST:GUEST   forward a host port to the guest (repeatable; ADDR 127.0.0.1)
  --name VM             the VM's name (default: the disk's name)
Without --kernel the disk boots itself (BIOS). The console is logged to <data-dir>/vms/<vm>/console.log.`

/** The same flags as an argv again (to hand a `run` to the daemon as a `start`). */
export function vmArgv (ref: string, values: Record<string, unknown>): string[] {
  const argv = [ref]
  for (const [flag, spec] of Object.entries(VM_OPTIONS)) {
    const value = values[flag]
    if (value == null || value === false) continue
    if (spec.type === 'boolean') argv.push(`--${flag}`)
    else for (const v of Array.isArray(value) ? value : [value]) argv.push(`--${flag}`, String(v))
  }
  return argv
}

/** A VM name from what the user typed: a root's name as is (cleaned), a CID's tail. */
function defaultVmName (ref: string, isCid: boolean): string {
  if (isCid) return `vm-${ref.slice(-10)}`
  const cleaned = ref.replace(/[^a-z0-9_.-]/gi, '-').replace(/^[^a-z0-9]+/i, '').slice(0, 63)
  return cleaned === '' ? 'vm' : cleaned
}

export function positiveInt (text: unknown, flag: string, fallback: number): number {
  if (text == null) return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer`)
  return n
}

/** The VM spec the flags describe; roots and boot files resolved in the store, limits checked. */
export async function specFromFlags (ctx: Context, ref: string, values: Record<string, unknown>): Promise<VmSpec> {
  const store = await ctx.openStore()
  const disk = await ctx.resolveRoot(ref)
  const isCid = (await store.pins.get(ref)) == null
  return checkSpec({
    name: (values.name as string | undefined) ?? defaultVmName(ref, isCid),
    disks: [{ root: disk.toString(), role: 'program' }],
    memory: parseMemory((values.memory as string | undefined) ?? '512M'),
    cpus: positiveInt(values.cpus, '--cpus', 1),
    kernel: values.kernel != null ? (await ctx.resolveRoot(values.kernel as string)).toString() : undefined,
    initrd: values.initrd != null ? (await ctx.resolveRoot(values.initrd as string)).toString() : undefined,
    cmdline: values.cmdline as string | undefined,
    forwards: ((values.forward as string[] | undefined) ?? []).map(parseForward),
    accel: parseAccel(values.accel as string | undefined)
  })
}

export function describeVmEvent (event: VmEvent): string | undefined {
  switch (event.type) {
    case 'vm:accel': return `accelerator: ${event.accel} (${event.reason})`
    case 'vm:layer': return event.created ? `disk ${event.disk}: new copy-on-write layer ${event.path}` : `disk ${event.disk}: keeping the layer ${event.path}`
    case 'vm:started': return `VM ${event.name} started (QEMU pid ${event.pid}, ${event.accel})`
    case 'vm:exited': return `VM ${event.name} stopped (${event.signal != null ? `QEMU killed by ${event.signal}` : `QEMU exit code ${event.code}`})`
  }
}

/** Events as lines for people (stderr), or NDJSON with --json. */
export function vmEventSink (ctx: Context): (event: VmEvent) => void {
  return event => {
    if (ctx.json) ctx.emit(event)
    else { const line = describeVmEvent(event); if (line != null) ctx.note(line) }
  }
}
