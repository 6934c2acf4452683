/**
 * Boot profiles end to end: a publisher records one (`run --record-profile`, through its daemon), puts
 * it in appliance.json and publishes; a cold host runs the appliance by id and fetches the profile's
 * blocks at prefetch priority before the guest asks for them. A host running the same disk published
 * without a profile prefetches nothing, and its guest's reads miss and wait for the swarm.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { readFile, writeFile } from 'node:fs/promises'
import { cli, tempDir } from '../helpers/cli.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { buildAppliance, type Appliance } from './helpers/appliance.js'
import { decodeProfile } from '../../src/runtime/index.js'
import { openStore } from '../../src/store/index.js'
import { importImage, DiskReader } from '../../src/dag/index.js'

/** Bytes of the distinct leaves behind a profile's ranges (the disk imported into a scratch store). */
async function profileLeafBytes (disk: string, profileFile: string, scratch: string): Promise<number> {
  const profile = decodeProfile(await readFile(profileFile))
  const store = await openStore(scratch)
  try {
    const { root } = await importImage(store.blocks, disk, { format: 'raw' })
    const reader = await DiskReader.open(root, store.blocks)
    const leaves = new Map<string, number>()
    for (const [, offset, length] of profile.reads) {
      for await (const leaf of reader.leavesIn(offset, length)) if (leaf.cid != null) leaves.set(leaf.cid.toString(), leaf.length)
    }
    return [...leaves.values()].reduce((a, b) => a + b, 0)
  } finally {
    await store.close()
  }
}

const BOOT_TIMEOUT = 120_000
const MARKER = 'COLLECTIVE-APPLIANCE-READY'
const HALT = 'console=ttyS0 quiet no_timer_check collective.halt=1'

describe('boot profiles', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let app: Appliance
  let source: TestDaemon
  const profileFile = (): string => join(dir, 'profile.cbor')

  beforeAll(async () => {
    app = await buildAppliance()
    ;({ dir, cleanup } = await tempDir('cp-profile-boot-'))
    source = await startDaemon(join(dir, 'source'))
    for (const [file, name, extra] of [[app.disk, 'appliance', []], [app.kernel, 'kernel', ['--format', 'raw']], [app.initrd, 'initrd', ['--format', 'raw']]] as const) {
      const r = await source.run(['import', file, '--name', name, ...extra, '--json'])
      expect(r.code, r.stderr).toBe(0)
    }
    expect((await source.run(['key', 'create', '--name', 'default'])).code).toBe(0)
  }, 300_000)

  afterAll(async () => {
    for (const d of ['source', 'with', 'without']) await cli(['--data-dir', join(dir, d), 'stop', '--all', '--timeout', '2'], { timeoutMs: 30_000 })
    await killAll()
    await cleanup?.()
  })

  it('run --record-profile writes the first reads of the boot, in order, through the daemon', async () => {
    const r = await cli(['--data-dir', source.dataDir, 'run', 'appliance', '--kernel', 'kernel', '--initrd', 'initrd', '--cmdline', HALT,
      '--memory', '256M', '--fresh', '--record-profile', 'profile.cbor', '--record-until', MARKER], { timeoutMs: BOOT_TIMEOUT, cwd: dir })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(MARKER)
    const profile = decodeProfile(await readFile(profileFile()))
    expect(r.stderr).toContain(`boot profile: ${profile.reads.length} ranges`)
    expect(r.stderr).toContain(`written to ${profileFile()}`)
    expect(profile.reads.length).toBeGreaterThan(3)
    // ext4's superblock (offset 1024) is read first; every range is on disk 0, inside the 64 MiB disk.
    expect(profile.reads[0]![1]).toBeLessThanOrEqual(1024)
    for (const [disk, offset, length] of profile.reads) {
      expect(disk).toBe(0)
      expect(offset + length).toBeLessThanOrEqual(64 * 1024 * 1024)
    }
    // First reads only: no byte twice.
    const sorted = profile.reads.map(([, o, l]) => [o, o + l]).sort((a, b) => a[0]! - b[0]!)
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]![0]).toBeGreaterThanOrEqual(sorted[i - 1]![1]!)
    // A flag without --record-profile is a usage error.
    const bad = await cli(['--data-dir', source.dataDir, 'run', 'appliance', '--record-until', MARKER])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^error \[ERR_USAGE\]: --record-until and --record-timeout need --record-profile FILE\n$/)
  }, BOOT_TIMEOUT)

  it('a cold host running the appliance by id prefetches the profile at prefetch priority; without one, nothing', async () => {
    const publish = async (name: string, bootProfile?: string): Promise<string> => {
      const file = join(dir, `${name}.json`)
      await writeFile(file, JSON.stringify({
        name,
        disks: [{ role: 'program', image: app.disk }],
        vm: { memory: '256M', cpus: 1, kernel: app.kernel, initrd: app.initrd, cmdline: HALT },
        config: {},
        ...(bootProfile != null ? { bootProfile } : {})
      }))
      const pub = await source.run(['publish', file, '--json'])
      expect(pub.code, pub.stderr).toBe(0)
      return pub.result.id
    }
    // The cold hosts join first: a publish with nobody to store its DHT record waits out the put.
    const hosts = await Promise.all(['with', 'without'].map(async name => await startDaemon(join(dir, name), ['--bootstrap', source.addresses[0]!])))
    const withId = await publish('profiled', profileFile())
    const withoutId = await publish('unprofiled')
    const show = await source.run(['appliance', 'show', withId, '--json'])
    expect(show.result.bootProfile).toEqual({ root: expect.stringMatching(/^baf/), size: (await readFile(profileFile())).length })

    const coldRun = async (host: TestDaemon, id: string): Promise<any> => {
      const r = await cli(['--data-dir', host.dataDir, 'run', id, '--accel', 'tcg'], { timeoutMs: BOOT_TIMEOUT })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toContain(MARKER)
      return (await host.run(['status', '--json'])).result.lazy
    }
    const withProfile = await coldRun(hosts[0]!, withId)
    const withoutProfile = await coldRun(hosts[1]!, withoutId)
    console.log(`lazy fetches with a profile ${JSON.stringify(withProfile)}, without ${JSON.stringify(withoutProfile)}`)
    // Every leaf the profile names came at prefetch priority (nothing else had asked for them yet).
    const leafBytes = await profileLeafBytes(app.disk, profileFile(), join(dir, 'scratch'))
    expect(leafBytes).toBeGreaterThan(0)
    expect(withProfile.prefetchBytes, JSON.stringify(withProfile)).toBeGreaterThanOrEqual(leafBytes)
    expect(withoutProfile.prefetchBlocks).toBe(0)
    // The pull of the rest waits for the boot's reads to settle: without a profile, the guest's reads
    // missed and waited for the swarm; with one, they found the blocks already here.
    expect(withProfile.demandBytes).toBeLessThan(withoutProfile.demandBytes)
    expect(withoutProfile.demandBytes).toBeGreaterThanOrEqual(leafBytes / 2)
  }, BOOT_TIMEOUT * 2)
})
