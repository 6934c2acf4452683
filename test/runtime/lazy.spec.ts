/**
 * Lazy boot: a host that never pulled an appliance runs it; the blocks its VM reads are fetched from
 * another daemon at demand priority, and the rest follows in the background.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { readFile, writeFile } from 'node:fs/promises'
import { cli, tempDir } from '../helpers/cli.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { buildAppliance, type Appliance } from './helpers/appliance.js'
import { cborCid } from '../../src/dag/hash.js'

const exec = promisify(execFile)
const BOOT_TIMEOUT = 120_000

describe('lazy boot from another host', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let app: Appliance
  let source: TestDaemon
  let host: TestDaemon
  const roots: Record<string, string> = {}

  beforeAll(async () => {
    app = await buildAppliance()
    ;({ dir, cleanup } = await tempDir('cp-lazy-'))
    source = await startDaemon(join(dir, 'source'))
    for (const [file, name, extra] of [[app.disk, 'appliance', []], [app.kernel, 'kernel', ['--format', 'raw']], [app.initrd, 'initrd', ['--format', 'raw']]] as const) {
      const r = await source.run(['import', file, '--name', name, ...extra, '--json'])
      expect(r.code, r.stderr).toBe(0)
      roots[name] = r.result.root
    }
    host = await startDaemon(join(dir, 'host'), ['--bootstrap', source.addresses[0]!])
  }, 300_000)

  afterAll(async () => {
    if (host != null) await cli(['--data-dir', host.dataDir, 'stop', '--all', '--timeout', '2'], { timeoutMs: 30_000 })
    await killAll()
    await cleanup?.()
  })

  it('runs a root it has never pulled: the VM reaches its marker, blocks come from the other daemon', async () => {
    const before = await host.run(['status', '--json'])
    expect(before.result.roots).toBe(0)
    const r = await cli(['--data-dir', host.dataDir, 'run', roots.appliance!, '--kernel', roots.kernel!, '--initrd', roots.initrd!,
      '--cmdline', 'console=ttyS0 quiet no_timer_check collective.halt=1', '--memory', '256M', '--name', 'cold'], { timeoutMs: BOOT_TIMEOUT })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/COLLECTIVE-APPLIANCE-READY boot=1/)
    expect(r.stdout).toContain('disk says hello from the appliance disk')
    const status = await host.run(['status', '--json'])
    expect(status.result.transfer.bytesReceived).toBeGreaterThan(0)

    // The background pull completes the disk: the host's copy is byte-identical to the source's image.
    const socket = join(host.dataDir, 'nbd.sock')
    const copy = join(dir, 'copy.img')
    await exec('nbdcopy', [`nbd+unix:///${roots.appliance}?socket=${socket}`, copy])
    expect(Buffer.compare(await readFile(copy), await readFile(app.disk))).toBe(0)
  }, BOOT_TIMEOUT)

  it('runs a published appliance by its id on a host that never pulled it: manifest from the DHT, blocks on demand', async () => {
    const file = join(dir, 'appliance.json')
    await writeFile(file, JSON.stringify({
      name: 'test-appliance',
      disks: [{ role: 'program', image: app.disk }],
      vm: { memory: '256M', cpus: 1, kernel: app.kernel, initrd: app.initrd, cmdline: 'console=ttyS0 quiet no_timer_check collective.halt=1' },
      config: {}
    }))
    expect((await source.run(['key', 'create', '--name', 'default'])).code).toBe(0)
    const pub = await source.run(['publish', file, '--json'])
    expect(pub.code, pub.stderr).toBe(0)
    expect(pub.result.bytesStored).toBe(0) // every block was imported already
    const fresh = await startDaemon(join(dir, 'fresh'), ['--bootstrap', source.addresses[0]!])
    const r = await cli(['--data-dir', fresh.dataDir, 'run', pub.result.id], { timeoutMs: BOOT_TIMEOUT })
    expect(r.code, `${r.stderr}\n${r.stdout.slice(-3000)}`).toBe(0)
    expect(r.stdout).toMatch(/COLLECTIVE-APPLIANCE-READY boot=1/)
    // The VM is named after the appliance, and its spec came from the manifest.
    const ps = await fresh.run(['ps', '--all', '--json'])
    const vm = ps.result.vms.find((v: any) => v.name === 'test-appliance')
    expect(vm, ps.stdout).toBeDefined()
    expect(vm.spec.memory).toBe(256 * 1024 * 1024)
    expect(vm.spec.disks[0].root).toBe(roots.appliance)
  }, BOOT_TIMEOUT)

  it('a root nobody has is a one-line error, not a hang', async () => {
    // A well-formed CID of a block that exists nowhere.
    const missing = cborCid(new TextEncoder().encode(`nobody has this ${Date.now()}`)).toString()
    const r = await cli(['--data-dir', host.dataDir, 'run', missing, '--memory', '256M'], { timeoutMs: 90_000 })
    expect(r.code).toBe(3)
    expect(r.stderr).toMatch(/^error \[ERR_NOT_FOUND\]: disk root \S+ is not in the store or the swarm\n$/)
  }, 90_000)
})
