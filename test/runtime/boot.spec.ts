/**
 * The test appliance (Debian kernel, busybox initramfs, ext4 disk) booted by the real CLI under QEMU
 * (TCG here: KVM does not work on these hosts), its disk served from the store over our NBD export.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { cli, tempDir, type CliResult } from '../helpers/cli.js'
import { buildAppliance, type Appliance } from './helpers/appliance.js'

// no_timer_check: on a loaded host, TCG is too slow for the kernel's IO-APIC timer check (it panics)
const HALT = 'console=ttyS0 quiet no_timer_check collective.halt=1'
const MARKER = /COLLECTIVE-APPLIANCE-READY boot=(\d+)/
const BOOT_TIMEOUT = 120_000

function expectError (r: CliResult, code: string, exit: number): void {
  const context = `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`
  expect(r.code, context).toBe(exit)
  expect(r.stderr, context).toMatch(new RegExp(`^error \\[${code}\\]: [^\\n]+\\n$`))
}

describe('run: boot the test appliance through the NBD export', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let app: Appliance
  let data: string
  const cp = async (args: string[], timeoutMs = BOOT_TIMEOUT, env?: Record<string, string>): Promise<CliResult> =>
    await cli(['--data-dir', data, ...args], { timeoutMs, env })
  const run = async (args: string[] = [], cmdline = HALT): Promise<CliResult> =>
    await cp(['run', 'appliance', '--kernel', 'kernel', '--initrd', 'initrd', '--cmdline', cmdline, '--memory', '256M', ...args])

  beforeAll(async () => {
    app = await buildAppliance()
    ;({ dir, cleanup } = await tempDir('cp-boot-'))
    data = join(dir, 'data')
    for (const [file, name, extra] of [[app.disk, 'appliance', []], [app.kernel, 'kernel', ['--format', 'raw']], [app.initrd, 'initrd', ['--format', 'raw']]] as const) {
      const r = await cp(['import', file, '--name', name, ...extra])
      expect(r.code, r.stderr).toBe(0)
    }
  }, 300_000)

  afterAll(async () => {
    if (data != null) await cp(['stop', '--all', '--timeout', '2'], 30_000)
    await cleanup?.()
  })

  it('boots to the marker on the serial console (TCG), and the console is logged', async () => {
    const r = await run()
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(MARKER)
    expect(r.stdout).toContain('disk says hello from the appliance disk')
    expect(r.stdout.match(MARKER)![1]).toBe('1')
    expect(r.stderr).toMatch(/accelerator: (tcg|kvm)/)
    expect(await readFile(join(data, 'vms', 'appliance', 'console.log'), 'utf8')).toMatch(MARKER)
    // Nothing of the run is left behind but the layer, the record, the log and the boot files.
    const left = (await import('node:fs')).readdirSync(join(data, 'vms', 'appliance')).sort()
    expect(left).toEqual(['boot', 'console.log', 'disk0.qcow2', 'exit.json', 'qemu.log', 'vm.json'])
  }, BOOT_TIMEOUT)

  it('keeps guest writes across runs, in the layer only: the published disk is untouched', async () => {
    const r = await run([], `${HALT} collective.records=3`)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('collective-appliance: record boot 1')
    expect(r.stdout).toMatch(/READY boot=2/)
    expect(r.stdout).toContain('SYNCED 2.3')
    const again = await run()
    expect(again.stdout).toContain('collective-appliance: record record 2.3')
    expect(again.stdout).toMatch(/READY boot=3/)

    // The store still holds the publisher's disk, byte for byte, and every block checks out.
    const copy = join(dir, 'copy.img')
    expect((await cp(['export', 'appliance', copy])).code).toBe(0)
    expect(Buffer.compare(await readFile(copy), await readFile(app.disk))).toBe(0)
    const fsck = await cp(['fsck', '--json'])
    expect(fsck.code, fsck.stderr).toBe(0)
    expect((await stat(join(data, 'vms', 'appliance', 'disk0.qcow2'))).size).toBeGreaterThan(0)
  }, BOOT_TIMEOUT * 2)

  it('--fresh and reset discard the layer', async () => {
    const fresh = await run(['--fresh'])
    expect(fresh.stdout).toMatch(/READY boot=1/)
    const again = await run()
    expect(again.stdout).toMatch(/READY boot=2/)
    const reset = await cp(['reset', 'appliance', '--json'])
    expect(reset.code, reset.stderr).toBe(0)
    expect(reset.result).toMatchObject({ name: 'appliance', layers: 1 })
    const after = await run()
    expect(after.stdout).toMatch(/READY boot=1/)
  }, BOOT_TIMEOUT * 3)

  it('one-line errors: unknown root, too much memory, QEMU missing, --detach without a daemon, bad flags', async () => {
    expectError(await cp(['run', 'no-such-disk']), 'ERR_NOT_FOUND', 3)
    expectError(await cp(['run', 'appliance', '--memory', '64T']), 'ERR_NOT_ENOUGH_MEMORY', 7)
    expectError(await cp(['run', 'appliance', '--kernel', 'kernel'], 30_000, { PATH: '/nonexistent' }), 'ERR_TOOL_MISSING', 1)
    expectError(await cp(['run', 'appliance', '--detach']), 'ERR_USAGE', 2)
    expectError(await cp(['run', 'appliance', '--forward', '99999:22']), 'ERR_INVALID_VM_SPEC', 2)
    expectError(await cp(['run', 'appliance', '--accel', 'xen']), 'ERR_INVALID_VM_SPEC', 2)
    expectError(await cp(['stop', 'no-such-vm']), 'ERR_VM_NOT_FOUND', 3)
    expectError(await cp(['reset', 'no-such-vm']), 'ERR_VM_NOT_FOUND', 3)
  }, 60_000)
})
