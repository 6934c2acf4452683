/**
 * VMs run by the daemon: its `nbd` service serves the disks, `run --detach` returns, `ps`, `console`,
 * `stop` (ACPI) and port forwards work from other processes; guest fsyncs survive kill -9 of QEMU,
 * of the daemon or of both, at eight kill points;
 * no QEMU outlives the daemon that serves its disks.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, statSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { cli, tempDir, type CliResult } from '../helpers/cli.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { alive, buildAppliance, freePort, waitForFile, type Appliance } from './helpers/appliance.js'

const exec = promisify(execFile)
const BOOT_TIMEOUT = 120_000
// no_timer_check: on a loaded host, TCG is too slow for the kernel's IO-APIC timer check (it panics)
const QUIET = 'console=ttyS0 quiet no_timer_check'

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

  it('kill -9 loop: every record the guest saw fsynced survives QEMU, the daemon or both killed at many points', async () => {
    // Each boot first prints every record on its disk, so boot i checks what boot i-1 saw fsynced;
    // then it appends records (each fsynced, then "SYNCED <boot>.<j>") until the kill. Kill points:
    // right at the marker, after the j-th SYNCED, or a delay after the marker (mid-record). When the
    // daemon dies, QEMU (which writes its layer itself) goes on until the next daemon reaps it.
    const points: Array<{ kill: 'qemu' | 'daemon' | 'both', at: 'marker' | { synced: number } | { ms: number } }> = [
      { kill: 'qemu', at: { synced: 1 } },
      { kill: 'daemon', at: { synced: 3 } },
      { kill: 'qemu', at: { ms: 150 } },
      { kill: 'both', at: { synced: 8 } },
      { kill: 'qemu', at: 'marker' },
      { kill: 'daemon', at: { ms: 400 } },
      { kill: 'qemu', at: { synced: 25 } },
      { kill: 'both', at: { ms: 60 } }
    ]
    const name = 'durable'
    const log = consoleLog(name)
    const expected: string[] = []
    const tail = async (from: number): Promise<string> => (await readFile(log).catch(() => Buffer.alloc(0))).subarray(from).toString('utf8')
    const waitInLog = async (from: number, pattern: RegExp, timeoutMs: number): Promise<string> => {
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline) {
        const text = await tail(from)
        if (pattern.test(text)) return text
        await new Promise(r => setTimeout(r, 25))
      }
      throw new Error(`${pattern} did not appear in ${log} within ${timeoutMs} ms: ${(await tail(from)).slice(-1500)}`)
    }
    const records = (text: string): string[] => [...text.matchAll(/^collective-appliance: record (.*?)\r?$/gm)].map(m => m[1]!)
    for (const [i, point] of points.entries()) {
      const boot = i + 1
      const from = await stat(log).then(s => s.size, () => 0)
      const r = await start(name, `${QUIET} collective.records=400`, ['--detach'])
      expect(r.code, r.stderr).toBe(0)
      const booted = await waitInLog(from, /COLLECTIVE-APPLIANCE-READY boot=\d+/, BOOT_TIMEOUT)
      expect(booted, `kill point ${i}`).toContain(`COLLECTIVE-APPLIANCE-READY boot=${boot}`)
      const onDisk = records(booted)
      const lost = expected.filter(r => !onDisk.includes(r))
      expect(lost, `boot ${boot} after ${JSON.stringify(points[i - 1])}: on disk ${onDisk.join(', ')}`).toEqual([])
      for (const record of onDisk) expect(record).toMatch(/^(boot \d+|record \d+\.\d+)$/)
      const { pid } = JSON.parse(await readFile(join(data, 'vms', name, 'run.json'), 'utf8'))
      if (typeof point.at === 'object' && 'synced' in point.at) await waitInLog(from, new RegExp(`SYNCED ${boot}\\.${point.at.synced}\\b`), BOOT_TIMEOUT)
      else if (typeof point.at === 'object') await new Promise(r => setTimeout(r, (point.at as { ms: number }).ms))
      if (point.kill !== 'daemon') process.kill(pid, 'SIGKILL')
      if (point.kill !== 'qemu') {
        await daemon.kill()
        daemon = await startDaemon(data) // kills the QEMU its predecessor left without disks
      }
      for (let t = 0; t < 200 && alive(pid); t++) await new Promise(r => setTimeout(r, 50))
      expect(alive(pid)).toBe(false)
      // The owner notices QEMU died and clears the run state (or the new daemon did, reaping it).
      for (let t = 0; t < 200 && existsSync(join(data, 'vms', name, 'run.json')); t++) await new Promise(r => setTimeout(r, 50))
      // What the guest saw fsynced, up to its last console line: the next boot must print all of it.
      const seen = [...(await tail(from)).matchAll(/^SYNCED (\d+\.\d+)/gm)].map(m => `record ${m[1]}`)
      if (typeof point.at === 'object' && 'synced' in point.at) expect(seen.length).toBeGreaterThanOrEqual(point.at.synced)
      expected.push(`boot ${boot}`, ...seen)
    }
    const last = await start(name, `${QUIET} collective.halt=1`)
    expect(last.code, last.stderr).toBe(0)
    expect(last.stdout).toMatch(new RegExp(`READY boot=${points.length + 1}\\b`))
    const onDisk = records(last.stdout)
    expect(expected.filter(r => !onDisk.includes(r)), `final boot: on disk ${onDisk.join(', ')}`).toEqual([])
    expect(expected.filter(r => r.startsWith('record')).length).toBeGreaterThan(points.length)
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
