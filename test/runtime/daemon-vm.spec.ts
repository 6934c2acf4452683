/**
 * VMs run by the daemon: its `nbd` service serves the disks, `run --detach` returns, `ps`, `console`,
 * `stop` (ACPI) and port forwards work from other processes; guest fsyncs survive kill -9 of QEMU;
 * no QEMU outlives the daemon that serves its disks.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { cli, tempDir, type CliResult } from '../helpers/cli.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { alive, buildAppliance, freePort, waitForFile, type Appliance } from './helpers/appliance.js'

const exec = promisify(execFile)
const BOOT_TIMEOUT = 120_000
const QUIET = 'console=ttyS0 quiet'

describe('VMs in the daemon', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let app: Appliance
  let daemon: TestDaemon
  let data: string
  let root: string
  const cp = async (args: string[], timeoutMs = BOOT_TIMEOUT): Promise<CliResult> => await cli(['--data-dir', data, ...args], { timeoutMs })
  const start = async (name: string, cmdline: string, extra: string[] = []): Promise<CliResult> =>
    await cp(['run', 'appliance', '--name', name, '--kernel', 'kernel', '--initrd', 'initrd', '--cmdline', cmdline, '--memory', '256M', ...extra])
  const consoleLog = (name: string): string => join(data, 'vms', name, 'console.log')
  const pidOf = async (name: string): Promise<number> => {
    const ps = await cp(['ps', '--json'])
    return ps.result.vms.find((vm: any) => vm.name === name)?.pid
  }

  beforeAll(async () => {
    app = await buildAppliance()
    ;({ dir, cleanup } = await tempDir('cp-vmd-'))
    data = join(dir, 'data')
    daemon = await startDaemon(data)
    for (const [file, name, extra] of [[app.disk, 'appliance', []], [app.kernel, 'kernel', ['--format', 'raw']], [app.initrd, 'initrd', ['--format', 'raw']]] as const) {
      const r = await daemon.run(['import', file, '--name', name, ...extra, '--json'])
      expect(r.code, r.stderr).toBe(0)
      if (name === 'appliance') root = r.result.root
    }
  }, 300_000)

  afterAll(async () => {
    if (data != null) await cp(['stop', '--all', '--timeout', '2'], 30_000)
    await killAll()
    await cleanup?.()
  })

  it('serves disk roots on <data-dir>/nbd.sock (0600) to any NBD client', async () => {
    const socket = join(data, 'nbd.sock')
    expect(statSync(socket).mode & 0o777).toBe(0o600)
    const { stdout } = await exec('nbdinfo', ['--size', `nbd+unix:///${root}?socket=${socket}`])
    expect(Number(stdout.trim())).toBe(statSync(app.disk).size)
  })

  it('run --detach, ps, port forward, console, then stop by the ACPI button', async () => {
    const port = await freePort()
    const r = await start('web', QUIET, ['--detach', '--forward', `${port}:80`])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe('web')
    const ps = await cp(['ps', '--json'])
    expect(ps.result.vms).toEqual([expect.objectContaining({ name: 'web', state: 'running', accel: expect.stringMatching(/tcg|kvm/) })])
    await waitForFile(consoleLog('web'), /httpd on 10\.0\.2\.15:80/, BOOT_TIMEOUT)
    const page = await fetch(`http://127.0.0.1:${port}/`).then(async res => await res.text())
    expect(page).toContain('collective-appliance web page')
    const con = await cp(['console', 'web', '--no-follow'])
    expect(con.stdout).toMatch(/COLLECTIVE-APPLIANCE-READY boot=1/)
    // A second VM on the same disk, in the foreground through the daemon, while the first runs.
    const fg = await start('batch', `${QUIET} collective.halt=1`)
    expect(fg.code, fg.stderr).toBe(0)
    expect(fg.stdout).toMatch(/READY boot=1/)
    const stop = await cp(['stop', 'web', '--timeout', '30', '--json'])
    expect(stop.result).toEqual({ stopped: [{ name: 'web', outcome: 'powered-off' }] })
    expect(await waitForFile(consoleLog('web'), /power button, shutting down/, 5_000)).toBeTruthy()
    const after = await cp(['ps', '--all', '--json'])
    expect(after.result.vms.map((vm: any) => [vm.name, vm.state])).toEqual([['batch', 'stopped'], ['web', 'stopped']])
    expect(existsSync(join(data, 'vms', 'web', 'qmp.sock'))).toBe(false)
  }, BOOT_TIMEOUT * 2)

  it('every record the guest saw fsynced survives kill -9 of QEMU', async () => {
    for (const killAfter of [3, 25]) {
      const name = `durable-${killAfter}`
      const r = await start(name, `${QUIET} collective.records=400`, ['--detach'])
      expect(r.code, r.stderr).toBe(0)
      const text = await waitForFile(consoleLog(name), new RegExp(`SYNCED 1\\.${killAfter}\\b`), BOOT_TIMEOUT)
      const pid = await pidOf(name)
      process.kill(pid, 'SIGKILL')
      const seen = [...(await waitForFile(consoleLog(name), /SYNCED/, 1000)).matchAll(/SYNCED (\d+\.\d+)/g)].map(m => m[1])
      expect(seen.length).toBeGreaterThanOrEqual(killAfter)
      expect(text).toBeTruthy()
      // The daemon notices QEMU died and clears the run state.
      for (let i = 0; i < 50 && (await cp(['ps', '--json'])).result.vms.some((vm: any) => vm.name === name); i++) await new Promise(r => setTimeout(r, 100))
      const again = await start(name, `${QUIET} collective.halt=1`)
      expect(again.code, again.stderr).toBe(0)
      for (const record of seen) expect(again.stdout).toContain(`record record ${record}`)
      expect(again.stdout).toMatch(/READY boot=2/)
    }
  }, BOOT_TIMEOUT * 4)

  it('stopping the daemon powers its VMs off; a daemon killed with -9 leaves no QEMU behind the next one', async () => {
    const r = await start('leftover', QUIET, ['--detach'])
    expect(r.code, r.stderr).toBe(0)
    await waitForFile(consoleLog('leftover'), /READY/, BOOT_TIMEOUT)
    const pid = await pidOf('leftover')
    expect(await daemon.stop()).toBe(0)
    expect(alive(pid)).toBe(false)
    expect(existsSync(join(data, 'vms', 'leftover', 'run.json'))).toBe(false)

    daemon = await startDaemon(data)
    const again = await start('orphan', QUIET, ['--detach'])
    expect(again.code, again.stderr).toBe(0)
    const orphan = await pidOf('orphan')
    await daemon.kill()
    expect(alive(orphan)).toBe(true) // its disks are gone with the daemon
    daemon = await startDaemon(data)
    expect(alive(orphan)).toBe(false)
    expect((await cp(['ps', '--json'])).result.vms).toEqual([])
  }, BOOT_TIMEOUT * 2)
})
