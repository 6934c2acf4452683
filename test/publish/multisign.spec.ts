/**
 * Signing on several hosts, with the real CLI: an appliance founded with a threshold of 2 keys that
 * live in two data dirs. `publish --no-announce --out` signs with the first; `announce` refuses it
 * below the threshold; `sign` on the second data dir (no store, no daemon) adds the other signature
 * after refusing a key the manifest does not list, a signer twice, and damaged, oversize and
 * malformed files, leaving the file as it was; then `announce` sends it out and a subscribed host
 * daemon accepts it and pins it. A second version continues the appliance (no --cosigner).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cli, expectOneLineError, tempDir, type CliResult, until } from '../helpers/cli.js'
import { writeImage, pseudoRandom } from '../helpers/images.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { decodeEnvelope, encodeEnvelope } from '../../src/publish/index.js'

const MiB = 1024 * 1024

function expectError (r: CliResult, code: string, exit: number): void {
  expectOneLineError(r, code, exit)
  expect(r.result, `stderr ${JSON.stringify(r.stderr)}`).toMatchObject({ error: { code } })
}


describe('multi-host signing: publish --no-announce, sign, announce', () => {
  let dir: string
  let cleanup: () => Promise<void>
  /** Holds the disks and key "default" (alice's); runs a daemon. */
  let alice: TestDaemon
  /** A data dir with only keys (bob's), no daemon: `sign` runs in the CLI process. */
  let bob: string
  let host: TestDaemon
  let bobFingerprint: string
  let id: string
  const bobCli = async (args: string[]): Promise<CliResult> => await cli(['--data-dir', bob, ...args], { timeoutMs: 60_000 })
  const manifest = (name: string): string => join(dir, name)

  async function current (appId = id): Promise<number | undefined> {
    const r = await host.run(['appliance', 'ls', '--json'])
    return r.lines.find(l => l.id === appId)?.current ?? undefined
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-multisign-'))
    await writeImage(join(dir, 'disk-v1.img'), 16 * MiB, [[0, 2 * MiB, 'ms-a'], [8 * MiB, 2 * MiB, 'ms-b']])
    await writeImage(join(dir, 'disk-v2.img'), 16 * MiB, [[0, 2 * MiB, 'ms-a'], [8 * MiB, 2 * MiB, 'ms-b'], [MiB, 256 * 1024, 'ms-edit']])
    await writeFile(join(dir, 'vmlinuz'), pseudoRandom('ms-kernel', 100_000))
    for (const v of [1, 2]) {
      await writeFile(join(dir, `app-v${v}.json`), JSON.stringify({
        name: 'shared',
        disks: [{ role: 'program', image: `disk-v${v}.img` }],
        vm: { memory: '256M', cpus: 1, kernel: 'vmlinuz', cmdline: 'console=ttyS0' },
        config: {}
      }))
    }
    alice = await startDaemon(join(dir, 'alice'))
    bob = join(dir, 'bob')
    const a = await alice.run(['key', 'create', '--name', 'default', '--json'])
    expect(a.code, a.stderr).toBe(0)
    for (const name of ['default', 'outsider']) {
      const b = await bobCli(['key', 'create', '--name', name, '--json'])
      expect(b.code, b.stderr).toBe(0)
    }
    bobFingerprint = (await bobCli(['key', 'export', 'default', '--json'])).result.fingerprint
    host = await startDaemon(join(dir, 'host'), ['--bootstrap', alice.addresses[0]!])
  }, 120_000)

  afterAll(async () => {
    await killAll()
    await cleanup?.()
  })

  it('below the threshold, publish refuses unless --no-announce --out, before importing anything', async () => {
    const r = await alice.run(['publish', join(dir, 'app-v1.json'), '--cosigner', bobFingerprint, '--threshold', '2', '--json'])
    expectError(r, 'ERR_THRESHOLD', 5)
    expect(r.stderr).toContain('--no-announce --out')
    expect((await alice.run(['ls', '--json'])).result.roots).toBe(0)
    expectError(await alice.run(['publish', join(dir, 'app-v1.json'), '--no-announce', '--json']), 'ERR_USAGE', 2)
  }, 60_000)

  it('publish --no-announce --out: signed by the local key only, disks pinned, not recorded; announce refuses it (ERR_THRESHOLD)', async () => {
    const r = await cli(['--data-dir', alice.dataDir, 'publish', 'app-v1.json', '--cosigner', bobFingerprint, '--threshold', '2', '--no-announce', '--out', 'v1.manifest', '--json'], { cwd: dir })
    expect(r.code, r.stderr).toBe(0)
    expect(r.result).toMatchObject({ version: 1, signatures: 1, threshold: 2, announced: null, file: manifest('v1.manifest') })
    id = r.result.id
    // Pinned, so gc keeps the blocks until it is announced; not a published version yet.
    const pins = (await alice.run(['pin', 'ls', '--json'])).lines.filter(l => l.root != null).map(l => l.root)
    expect(pins).toContain(r.result.root)
    const apps = await alice.run(['appliance', 'ls', '--json'])
    expect(apps.lines.find(l => l.id === id)).toBeUndefined()

    const sub = await host.run(['subscribe', id, '--json'])
    expect(sub.code, sub.stderr).toBe(0)

    const below = await alice.run(['announce', manifest('v1.manifest'), '--json'])
    expectError(below, 'ERR_THRESHOLD', 5)
    expect(below.stderr).toContain('1 of the 2 signatures')
  }, 120_000)

  it('sign refuses an unlisted key, a signer twice, a damaged, oversize or malformed file, and leaves the file as it was', async () => {
    const file = manifest('v1.manifest')
    const before = await readFile(file)
    expectError(await bobCli(['sign', file, '--key', 'outsider', '--json']), 'ERR_KEY_NOT_LISTED', 2)
    expectError(await alice.run(['sign', file, '--json']), 'ERR_ALREADY_SIGNED', 2)
    expectError(await bobCli(['sign', file, '--key', 'default', '--key', 'default', '--json']), 'ERR_ALREADY_SIGNED', 2)
    expect(await readFile(file)).toEqual(before)

    // Alice's signature altered: refused, whoever signs next.
    const envelope = decodeEnvelope(before)
    envelope.signatures[0]!.sig[5]! ^= 0x01
    await writeFile(manifest('tampered.manifest'), encodeEnvelope(envelope))
    expectError(await bobCli(['sign', manifest('tampered.manifest'), '--json']), 'ERR_BAD_SIGNATURE', 5)
    await writeFile(manifest('oversize.manifest'), randomBytes(70 * 1024))
    expectError(await bobCli(['sign', manifest('oversize.manifest'), '--json']), 'ERR_MANIFEST_TOO_LARGE', 7)
    await writeFile(manifest('garbage.manifest'), randomBytes(600))
    expectError(await bobCli(['sign', manifest('garbage.manifest'), '--json']), 'ERR_INVALID_MANIFEST', 7)
    expectError(await bobCli(['sign', manifest('missing.manifest'), '--json']), 'ERR_FILE_NOT_FOUND', 3)
  }, 60_000)

  it('the second key signs (no store, no daemon); announce sends it out and the subscribed host accepts and pins it', async () => {
    const signed = await bobCli(['sign', manifest('v1.manifest'), '--json'])
    expect(signed.code, signed.stderr).toBe(0)
    expect(signed.result).toMatchObject({ id, version: 1, signatures: 2, threshold: 2, complete: true, added: [bobFingerprint] })
    expect(signed.result.signers).toContain(bobFingerprint)

    const announced = await alice.run(['announce', manifest('v1.manifest'), '--json'])
    expect(announced.code, announced.stderr).toBe(0)
    expect(announced.result).toMatchObject({ id, version: 1, signatures: 2, threshold: 2 })
    expect(announced.result.announced).not.toBeNull()
    const root = announced.result.root
    const apps = await alice.run(['appliance', 'ls', '--json'])
    expect(apps.lines.find(l => l.id === id)).toMatchObject({ current: 1 })

    await until('v1 on the host', async () => await current() === 1 ? true : undefined, 60_000)
    const pins = (await host.run(['pin', 'ls', '--json'])).lines.filter(l => l.root != null).map(l => l.root)
    expect(pins).toContain(root)
    const log = (await host.run(['log', '--json'])).lines
    expect(log.find(e => e.type === 'fetched' && e.version === 1 && e.id === id)).toBeDefined()
    expect(log.filter(e => e.type === 'refused' && e.id === id)).toEqual([])
  }, 120_000)

  it('v2 continues the appliance: the same flow with no --cosigner; the old v1 is stale after it', async () => {
    const draft = await alice.run(['publish', join(dir, 'app-v2.json'), '--no-announce', '--out', manifest('v2.manifest'), '--json'])
    expect(draft.code, draft.stderr).toBe(0)
    expect(draft.result).toMatchObject({ id, version: 2, signatures: 1, threshold: 2 })
    const signed = await bobCli(['sign', manifest('v2.manifest'), '--out', manifest('v2-signed.manifest'), '--json'])
    expect(signed.code, signed.stderr).toBe(0)
    expect(signed.result.complete).toBe(true)
    const announced = await alice.run(['announce', manifest('v2-signed.manifest'), '--json'])
    expect(announced.code, announced.stderr).toBe(0)
    await until('v2 on the host', async () => await current() === 2 ? true : undefined, 60_000)
    expectError(await alice.run(['announce', manifest('v1.manifest'), '--json']), 'ERR_STALE_VERSION', 5)
    // The same manifest again is only announced again.
    const again = await alice.run(['announce', manifest('v2-signed.manifest'), '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.result.version).toBe(2)
  }, 120_000)

  it('--help for sign and announce', async () => {
    for (const command of ['sign', 'announce']) {
      const r = await cli([command, '--help'])
      expect(r.code).toBe(0)
      expect(r.stdout).toContain(`Usage: collective-peer ${command} <FILE.manifest>`)
    }
  })
})
