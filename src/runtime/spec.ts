import { totalmem } from 'node:os'
import { InvalidVmSpecError, NotEnoughMemoryError } from './errors.js'
import type { Accel, PortForward, VmSpec } from './interface.js'

const MiB = 1024 * 1024
const UNITS: Record<string, number> = { '': MiB, B: 1, K: 1024, M: MiB, G: 1024 * MiB, T: 1024 * 1024 * MiB }
const VM_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/i

/** Guest memory as QEMU's `-m` reads it: a bare number is MiB; suffixes K, M, G, T (binary). */
export function parseMemory (text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([BKMGT]?)(?:i?B)?$/i.exec(text.trim())
  if (m == null) throw new InvalidVmSpecError(`invalid memory size "${text}" (e.g. 512M, 2G)`)
  const bytes = Math.round(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!)
  if (bytes < 16 * MiB) throw new InvalidVmSpecError(`memory ${text} is too small (at least 16M)`)
  return bytes
}

/** `[tcp:|udp:][ADDRESS:]HOSTPORT:GUESTPORT`, e.g. `2222:22`, `udp:5353:53`, `0.0.0.0:8080:80`. */
export function parseForward (text: string): PortForward {
  let rest = text.trim()
  let protocol: 'tcp' | 'udp' = 'tcp'
  const proto = /^(tcp|udp):/i.exec(rest)
  if (proto != null) { protocol = proto[1]!.toLowerCase() as 'tcp' | 'udp'; rest = rest.slice(proto[0].length) }
  const parts = rest.split(':')
  const port = (p: string | undefined): number => {
    const n = Number(p)
    if (p == null || !/^\d+$/.test(p) || n < 1 || n > 65535) throw new InvalidVmSpecError(`invalid port forward "${text}" (HOSTPORT:GUESTPORT, e.g. 2222:22)`)
    return n
  }
  if (parts.length === 2) return { protocol, hostAddress: '127.0.0.1', hostPort: port(parts[0]), guestPort: port(parts[1]) }
  if (parts.length === 3 && /^[\d.]+$/.test(parts[0]!)) return { protocol, hostAddress: parts[0]!, hostPort: port(parts[1]), guestPort: port(parts[2]) }
  throw new InvalidVmSpecError(`invalid port forward "${text}" (HOSTPORT:GUESTPORT, e.g. 2222:22)`)
}

export function parseAccel (text: string | undefined): Accel {
  const accel = (text ?? 'auto').toLowerCase()
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') throw new InvalidVmSpecError(`--accel must be auto, kvm or tcg (not "${text}")`)
  return accel
}

export function checkVmName (name: string): string {
  if (!VM_NAME.test(name)) throw new InvalidVmSpecError(`invalid VM name "${name}": letters, digits and . _ - (at most 63, starting with a letter or digit)`)
  return name
}

/** Throws the errors a user can fix before anything is started: bad numbers, too much memory. */
export function checkSpec (spec: VmSpec, host: { memory: number } = { memory: totalmem() }): VmSpec {
  checkVmName(spec.name)
  if (spec.disks.length === 0) throw new InvalidVmSpecError('a VM needs at least one disk')
  if (spec.disks.length > 8) throw new InvalidVmSpecError('at most 8 disks')
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1 || spec.cpus > 64) throw new InvalidVmSpecError(`invalid CPU count ${spec.cpus} (1-64)`)
  if (spec.memory > host.memory) {
    throw new NotEnoughMemoryError(`the VM asks for ${formatBytes(spec.memory)} of memory; this host has ${formatBytes(host.memory)}`)
  }
  if (spec.initrd != null && spec.kernel == null) throw new InvalidVmSpecError('an initrd needs a kernel (--kernel)')
  const ports = new Set<string>()
  for (const f of spec.forwards) {
    const key = `${f.protocol}:${f.hostAddress}:${f.hostPort}`
    if (ports.has(key)) throw new InvalidVmSpecError(`host port ${f.hostPort}/${f.protocol} is forwarded twice`)
    ports.add(key)
  }
  return spec
}

export function formatBytes (n: number): string {
  if (n >= 1024 * MiB && n % (1024 * MiB) === 0) return `${n / (1024 * MiB)}G`
  if (n >= 1024 * MiB) return `${(n / (1024 * MiB)).toFixed(1)}G`
  return `${Math.round(n / MiB)}M`
}
