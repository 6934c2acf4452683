import { spawn } from 'node:child_process'
import { access, constants } from 'node:fs/promises'

/** A guest under working KVM reaches the marker in well under a second; TCG here takes ~1 s. */
export const PROBE_TIMEOUT = 3_000
/** SeaBIOS's last words when there is nothing to boot, on its debug port (0x402). */
const MARKER = 'No bootable device'

export interface KvmProbe {
  usable: boolean
  reason: string
}

let cached: Promise<KvmProbe> | undefined

/**
 * Whether KVM actually runs a guest here. `/dev/kvm` existing is not enough: under a nested software
 * hypervisor `-cpu host` aborts and other CPU models crawl. The probe boots SeaBIOS under KVM with the
 * CPU model a VM would get (`-cpu host`) and waits for its "No bootable device" on the debug port,
 * within PROBE_TIMEOUT. Cached for the life of the process.
 */
export async function probeKvm (qemu: string, options: { timeoutMs?: number } = {}): Promise<KvmProbe> {
  cached ??= runProbe(qemu, options.timeoutMs ?? PROBE_TIMEOUT)
  return await cached
}

async function runProbe (qemu: string, timeoutMs: number): Promise<KvmProbe> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK)
  } catch {
    return { usable: false, reason: '/dev/kvm is missing or not accessible' }
  }
  const started = Date.now()
  return await new Promise(resolve => {
    const child = spawn(qemu, [
      '-accel', 'kvm', '-cpu', 'host', '-machine', 'pc', '-m', '16M', '-nodefaults', '-no-user-config',
      '-display', 'none', '-serial', 'none', '-monitor', 'none', '-no-reboot',
      '-debugcon', 'stdio', '-global', 'isa-debugcon.iobase=0x402'
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    let settled = false
    const finish = (probe: KvmProbe): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
      resolve(probe)
    }
    const timer = setTimeout(() => { finish({ usable: false, reason: `a KVM guest did not reach the BIOS's end within ${timeoutMs} ms (KVM too slow here)` }) }, timeoutMs)
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1')
      if (out.includes(MARKER)) finish({ usable: true, reason: `a KVM guest ran the BIOS in ${Date.now() - started} ms` })
      if (out.length > 1024 * 1024) out = out.slice(-4096)
    })
    child.stderr.on('data', (d: Buffer) => { if (err.length < 4096) err += d.toString() })
    child.on('error', e => { finish({ usable: false, reason: `cannot start ${qemu}: ${e.message}` }) })
    child.on('exit', () => {
      const line = err.split('\n').find(l => /error|fail|abort/i.test(l)) ?? err.split('\n')[0] ?? ''
      finish({ usable: false, reason: `QEMU under KVM exited: ${line.trim() || 'no output'}` })
    })
  })
}
