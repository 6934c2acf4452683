// Only light modules at load: `run` through a daemon needs none of the runtime or the publishing code.
import { checkSpec, parseAccel, parseForward, parseMemory } from '../runtime/spec.js'
import type { VmEvent, VmSpec } from '../runtime/interface.js'
import { UsageError } from '../errors.js'
import type { Manifest } from '../publish/index.js'
import { parseCid } from '../dag/hash.js'
import type { Options } from './command.js'
import type { Context } from './context.js'
import { logger } from '@libp2p/logger'

const log = logger('collective:runtime')

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

export const VM_USAGE = '<appliance-id|name|disk cid> [--kernel <cid|name>] [--initrd <cid|name>] [--cmdline TEXT] [--memory 512M] [--cpus 1] [--accel auto|kvm|tcg] [--fresh] [--forward HOST:GUEST]... [--name VM]'

export const VM_HELP = `  --kernel <cid|name>   direct kernel boot: a kernel imported into the store (collective-peer import vmlinuz)
  --initrd <cid|name>   an initrd for it, likewise
  --cmdline TEXT        the kernel command line (default "console=ttyS0")
  --memory SIZE         guest memory, e.g. 512M, 2G (default 512M; at most what this host has)
  --cpus N              virtual CPUs (default 1)
  --accel auto|kvm|tcg  auto: KVM when a probe guest runs well under it, else TCG (default auto)
  --fresh               discard the VM's layer first: start from the published disk
  --forward [tcp:|udp:][ADDR:]HOST:GUEST   forward a host port to the guest (repeatable; ADDR 127.0.0.1)
  --name VM             the VM's name (default: the disk's name)
An appliance (by id or name) runs its current version with the manifest's disks, memory, CPUs, boot
files and port forwards; flags override them. With a daemon, an appliance this host never pulled runs
at once: the manifest comes from the swarm's DHT and blocks are fetched as the guest reads them.
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

/**
 * The manifest of an appliance `ref` names (id or name): the current version of one this host
 * follows or publishes, else (through the daemon) the latest the swarm's DHT holds, verified — so a
 * host can run an appliance it never pulled, its blocks fetched as the guest reads them.
 */
async function applianceManifest (ctx: Context, ref: string): Promise<Manifest | undefined> {
  const { checkFresh, decodeEnvelope, decodeManifest, latestRecord, verifyEnvelope } = await import('../publish/index.js')
  const { appliancesOf } = await import('./appliances.js')
  const appliances = appliancesOf(ctx)
  const known = (await appliances.list()).filter(s => s.id === ref || s.name === ref)
  const state = known.find(s => s.current != null)
  if (state != null) return decodeManifest(decodeEnvelope(await appliances.envelope(state.id, state.current!)).manifest)
  if (ctx.daemon == null || !/^bafyr4/.test(ref)) return undefined
  if ((await ctx.openStore().then(async s => await s.pins.get(ref))) != null) return undefined
  let envelope: Uint8Array
  const since = Date.now()
  try {
    envelope = await latestRecord(ctx.daemon.libp2p.services.dht, ref, { signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(15_000)]) })
  } catch (err: any) {
    log('no manifest of %s in the DHT after %d ms: %s', ref, Date.now() - since, err.message)
    return undefined
  }
  log('manifest of %s from the DHT in %d ms', ref, Date.now() - since)
  const { manifest } = await verifyEnvelope(envelope, { id: parseCid(ref) })
  checkFresh(manifest, 0)
  return manifest
}

/** The VM spec the flags describe — or an appliance's manifest, flags overriding it; limits checked. */
export async function specFromFlags (ctx: Context, ref: string, values: Record<string, unknown>): Promise<VmSpec> {
  const manifest = await applianceManifest(ctx, ref)
  if (manifest != null) {
    const vm = manifest.vm
    return checkSpec({
      name: (values.name as string | undefined) ?? defaultVmName(manifest.name, false),
      disks: manifest.disks.map(d => ({ root: d.root.toString(), role: d.role })),
      memory: values.memory != null ? parseMemory(values.memory as string) : vm.memory,
      cpus: positiveInt(values.cpus, '--cpus', vm.cpus),
      kernel: values.kernel != null ? (await ctx.resolveRoot(values.kernel as string)).toString() : vm.kernel?.root.toString(),
      initrd: values.initrd != null ? (await ctx.resolveRoot(values.initrd as string)).toString() : vm.initrd?.root.toString(),
      cmdline: (values.cmdline as string | undefined) ?? vm.cmdline,
      forwards: values.forward != null
        ? (values.forward as string[]).map(parseForward)
        : vm.nics.flatMap(n => n.forwards.map(f => ({ protocol: f.proto, hostAddress: '127.0.0.1', hostPort: f.host, guestPort: f.guest }))),
      accel: parseAccel(values.accel as string | undefined),
      bootProfile: manifest.bootProfile?.root.toString()
    })
  }
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
