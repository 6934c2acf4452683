/**
 * Publishing and updates with real daemons on 127.0.0.1: a publisher and three hosts. v1 is
 * published and pulled; v2 moves exactly the diff's bytes; rollback needs no network; a late host
 * finds the latest version in the DHT; keys rotate; and a hostile process announces forged,
 * replayed, oversize and malformed manifests on gossip, each refused and logged, nothing fetched.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { tempDir, until } from '../helpers/cli.js'
import { writeImage, pseudoRandom, sha256File } from '../helpers/images.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'
import { decodeEnvelope, decodeManifest, encodeEnvelope, encodeManifest, KeyStore, signManifest, type Manifest } from '../../src/publish/index.js'
import { rawCid } from '../../src/dag/hash.js'

const MiB = 1024 * 1024
const ATTACKER = resolve(import.meta.dirname, '../fixtures/gossip-attacker.mjs')



/** Runs the gossip attacker against `host` and waits until it has sent every file. */
async function attack (host: TestDaemon, id: string, files: string[]): Promise<any[]> {
  const proc = spawn(process.execPath, [ATTACKER, '--bootstrap', host.addresses[0]!, '--id', id, ...files], { stdio: ['ignore', 'pipe', 'pipe'] })
  const events: any[] = []
  let stderr = ''
  proc.stderr.on('data', d => { stderr += d })
  createInterface({ input: proc.stdout }).on('line', line => { try { events.push(JSON.parse(line)) } catch {} })
  const code = await new Promise(resolve => {
    const timer = setTimeout(() => { proc.kill('SIGKILL') }, 60_000)
    proc.once('exit', code => { clearTimeout(timer); resolve(code) })
  })
  expect(code, `attacker: ${stderr}`).toBe(0)
  return events
}

describe('publishing and updates', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let publisher: TestDaemon
  const hosts: TestDaemon[] = []
  let id: string
  const image = (v: number): string => join(dir, `disk-v${v}.img`)
  const appFile = (v: number): string => join(dir, `app-v${v}.json`)
  const roots: Record<number, string> = {}

  async function current (host: TestDaemon, appId = id): Promise<number | undefined> {
    const r = await host.run(['appliance', 'ls', '--json'])
    return r.lines.find(l => l.id === appId)?.current ?? undefined
  }

  async function log (host: TestDaemon): Promise<any[]> {
    const r = await host.run(['log', '--json'])
    expect(r.code, r.stderr).toBe(0)
    return r.lines.filter(l => l.type != null)
  }

  async function writeApp (v: number, name = 'web', disk = image(v)): Promise<void> {
    await writeFile(v > 100 ? join(dir, `${name}.json`) : appFile(v), JSON.stringify({
      name,
      disks: [{ role: 'program', image: disk }],
      vm: { memory: '256M', cpus: 1, kernel: join(dir, 'vmlinuz'), cmdline: 'console=ttyS0', forwards: ['2222:22'] },
      config: { hostname: { type: 'string', default: name, description: 'the host name' } }
    }))
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-publish-'))
    // v1: 64 MiB disk, 24 MiB of data; v2: 1 MiB rewritten in place and 512 KiB added, like an update.
    await writeImage(image(1), 64 * MiB, [[0, 12 * MiB, 'pub-a'], [32 * MiB, 12 * MiB, 'pub-b']])
    await writeImage(image(2), 64 * MiB, [[0, 12 * MiB, 'pub-a'], [32 * MiB, 12 * MiB, 'pub-b'], [4 * MiB, MiB, 'pub-edit'], [50 * MiB, MiB / 2, 'pub-new']])
    await writeImage(image(3), 64 * MiB, [[0, 12 * MiB, 'pub-a'], [32 * MiB, 12 * MiB, 'pub-b'], [4 * MiB, MiB, 'pub-edit-3']])
    await writeFile(join(dir, 'vmlinuz'), pseudoRandom('kernel', 300_000))
    for (const v of [1, 2, 3, 4]) await writeApp(v, 'web', image(Math.min(v, 3)))
    publisher = await startDaemon(join(dir, 'publisher'))
    for (const name of ['default', 'second', 'next']) {
      const r = await publisher.run(['key', 'create', '--name', name, '--json'])
      expect(r.code, r.stderr).toBe(0)
    }
    for (const name of ['h1', 'h2', 'h3']) hosts.push(await startDaemon(join(dir, name), ['--bootstrap', publisher.addresses[0]!]))
  }, 120_000)

  afterAll(async () => {
    await killAll()
    await cleanup?.()
  })

  it('publish v1; three hosts subscribe and pull it, byte-identical', async () => {
    const pub = await publisher.run(['publish', appFile(1), '--json'])
    expect(pub.code, pub.stderr).toBe(0)
    expect(pub.result.version).toBe(1)
    id = pub.result.id
    roots[1] = pub.result.root
    for (const host of hosts) {
      const sub = await host.run(['subscribe', id, '--json'])
      expect(sub.code, sub.stderr).toBe(0)
      await until('v1 on the host', async () => await current(host) === 1 ? true : undefined)
      const out = join(dir, `${host.dataDir.split('/').pop()}-v1.img`)
      expect((await host.run(['export', roots[1]!, out])).code).toBe(0)
      expect(await sha256File(out)).toBe(await sha256File(image(1)))
    }
  }, 120_000)

  it('publish v2: every host fetches exactly the diff (bytes on the wire counted) and pins v2', async () => {
    const before = await Promise.all(hosts.map(async h => (await h.run(['status', '--json'])).result.transfer.bytesReceived as number))
    const pub = await publisher.run(['publish', appFile(2), '--json'])
    expect(pub.code, pub.stderr).toBe(0)
    expect(pub.result.version).toBe(2)
    roots[2] = pub.result.root
    const diff = await publisher.run(['diff', roots[1]!, roots[2]!, '--json'])
    expect(diff.code, diff.stderr).toBe(0)
    expect(diff.result.bytes).toBeGreaterThan(0)
    expect(diff.result.bytes).toBeLessThan(3 * MiB)
    for (const [i, host] of hosts.entries()) {
      await until(`v2 on host ${i}`, async () => await current(host) === 2 ? true : undefined)
      const fetched = (await log(host)).find(e => e.type === 'fetched' && e.version === 2)
      // Only the blocks v1 lacks: the diff, exactly.
      expect(fetched.bytesFetched, `host ${i}`).toBe(diff.result.bytes)
      const received = (await host.run(['status', '--json'])).result.transfer.bytesReceived - before[i]!
      // Block bytes received: the diff plus endgame duplicates (the whole of v2 is over ten times the
      // diff). The overhead itself is bench/update's figure (1.002x with 8 hosts); here, on a
      // loaded machine with four peers racing each other (1.34x seen), it is only bounded.
      expect(received, `host ${i} received`).toBeLessThanOrEqual(Math.ceil(diff.result.bytes * 2))
      const pins = (await host.run(['pin', 'ls', '--json'])).lines.filter(l => l.root != null).map(l => l.root)
      expect(pins).toContain(roots[2])
      expect(pins).toContain(roots[1]) // kept for rollback
    }
  }, 120_000)

  it('rollback returns to v1 without the network', async () => {
    const host = hosts[0]!
    const r = await host.run(['rollback', id, '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.result).toMatchObject({ version: 1, from: 2 })
    expect(await current(host)).toBe(1)
    const out = join(dir, 'rolled-back.img')
    expect((await host.run(['export', roots[1]!, out])).code).toBe(0)
    expect(await sha256File(out)).toBe(await sha256File(image(1)))
  })

  it('a host that joins late finds the latest version through the DHT', async () => {
    // Bootstrapped to another host, not to the publisher.
    const late = await startDaemon(join(dir, 'late'), ['--bootstrap', hosts[1]!.addresses[0]!])
    hosts.push(late)
    const sub = await late.run(['subscribe', id, '--json'])
    expect(sub.code, sub.stderr).toBe(0)
    expect(await until('v2 on the late host', async () => await current(late) === 2 ? true : undefined)).toBe(true)
  }, 60_000)

  it('forged, replayed, oversize and malformed announcements from a hostile process: each refused and logged, nothing fetched or pinned', async () => {
    const target = hosts[1]!
    // A second appliance that needs two signatures, to try one key counted twice.
    await writeApp(101, 'db', image(1))
    const db = await publisher.run(['publish', join(dir, 'db.json'), '--key', 'default', '--key', 'second', '--threshold', '2', '--json'])
    expect(db.code, db.stderr).toBe(0)
    expect((await target.run(['subscribe', db.result.id, '--json'])).code).toBe(0)
    await until('db v1 on the target', async () => await current(target, db.result.id) === 1 ? true : undefined)

    const keys = new KeyStore(publisher.dataDir)
    const genuine = await keys.load('default')
    const stranger = await generateKeyPair('Ed25519')
    const v2 = decodeManifest(decodeEnvelope(await readFile(join(publisher.dataDir, 'appliances', id, 'v2.manifest'))).manifest)
    const dbV1 = decodeManifest(decodeEnvelope(await readFile(join(publisher.dataDir, 'appliances', db.result.id, 'v1.manifest'))).manifest)
    // Every forged disk points at blocks nobody has: fetching any of them would fail loudly.
    const nowhere = rawCid(pseudoRandom('nowhere', 1000))
    const next = (over: Partial<Manifest>, base: Manifest = v2): Manifest => ({ ...base, version: base.version + 1, created: Math.floor(Date.now() / 1000), disks: [{ ...base.disks[0]!, root: nowhere }], ...over })

    const cases: Array<[string, string, Uint8Array, string]> = []
    const add = (name: string, code: string, bytes: Uint8Array, topic = id): void => { cases.push([name, code, bytes, topic]) }
    {
      const bytes = encodeManifest(next({}))
      const env = decodeEnvelope(await signManifest(bytes, [genuine]))
      env.signatures[0]!.sig[0]! ^= 0xff
      add('bad signature', 'ERR_BAD_SIGNATURE', encodeEnvelope(env))
      add('signed by an unknown key', 'ERR_UNTRUSTED_KEY', await signManifest(bytes, [stranger]))
      add('no signature: below the threshold', 'ERR_THRESHOLD', encodeEnvelope({ manifest: bytes, signatures: [] }))
    }
    add('one key twice toward a threshold of 2', 'ERR_THRESHOLD', await signManifest(encodeManifest(next({}, dbV1)), [genuine, genuine]), db.result.id)
    add('replay of v1 (lower version)', 'ERR_STALE_VERSION', await readFile(join(publisher.dataDir, 'appliances', id, 'v1.manifest')))
    add('another manifest reusing v2 (equal version)', 'ERR_STALE_VERSION', await signManifest(encodeManifest({ ...next({}), version: 2 }), [genuine]))
    add('expired', 'ERR_EXPIRED', await signManifest(encodeManifest(next({ created: 1_600_000_000, expires: 1_600_086_400 })), [genuine]))
    add('oversize (70 KiB)', 'ERR_MANIFEST_TOO_LARGE', randomBytes(70 * 1024))
    add('malformed dag-cbor', 'ERR_INVALID_MANIFEST', randomBytes(600))
    add('another appliance\'s manifest on this topic', 'ERR_WRONG_APPLIANCE', await readFile(join(publisher.dataDir, 'appliances', db.result.id, 'v1.manifest')))
    add('a schema violation (threshold above the keys)', 'ERR_INVALID_MANIFEST', await signManifest(encodeManifest(next({ threshold: 5 })), [genuine]))

    // Sent in order, each on its appliance's topic (the db case on db's).
    cases.sort((a, b) => Number(a[3] !== id) - Number(b[3] !== id))
    const pinsBefore = (await target.run(['pin', 'ls', '--json'])).lines.filter(l => l.root != null)
    const logBefore = (await log(target)).length
    for (const topic of [id, db.result.id]) {
      const files: string[] = []
      for (const [i, [, , bytes, t]] of cases.entries()) {
        if (t !== topic) continue
        const file = join(dir, `attack-${i}.bin`)
        await writeFile(file, bytes)
        files.push(file)
      }
      const sent = await attack(target, topic, files)
      expect(sent.filter(e => e.type === 'sent')).toHaveLength(files.length)
    }

    const refused = await until('every attack refused', async () => {
      const events = (await log(target)).slice(logBefore).filter(e => e.type === 'refused')
      return events.length >= cases.length ? events : undefined
    })
    // One refusal per case, in order, each with the reason's code.
    expect(refused.map(e => e.code), cases.map(c => c[0]).join('; ')).toEqual(cases.map(c => c[1]))
    const after = (await log(target)).slice(logBefore)
    expect(after.filter(e => e.type === 'accepted' || e.type === 'fetched')).toEqual([])
    expect((await target.run(['pin', 'ls', '--json'])).lines.filter(l => l.root != null)).toEqual(pinsBefore)
    expect(await current(target)).toBe(2)
    expect(await current(target, db.result.id)).toBe(1)
    console.log(`publish.spec: ${cases.length} attack cases refused: ${cases.map(c => `${c[0]} → ${c[1]}`).join(', ')}`)
  }, 120_000)

  it('the versions seen survive a restart: v1 replayed after it is still refused', async () => {
    const target = hosts[1]!
    const dataDir = target.dataDir
    expect(await target.stop()).toBe(0)
    const restarted = await startDaemon(dataDir, ['--bootstrap', publisher.addresses[0]!])
    hosts[1] = restarted
    const logBefore = (await log(restarted)).length
    const v1 = join(publisher.dataDir, 'appliances', id, 'v1.manifest')
    await attack(restarted, id, [v1])
    const refused = await until('the replay refused', async () => (await log(restarted)).slice(logBefore).find(e => e.type === 'refused'))
    expect(refused.code).toBe('ERR_STALE_VERSION')
    expect(await current(restarted)).toBe(2)
  }, 90_000)

  it('key rotation: v3 hands the appliance to a new key; hosts walk the chain; the old key alone is refused after', async () => {
    const v3 = await publisher.run(['publish', appFile(3), '--key', 'default', '--rotate-to', 'next', '--json'])
    expect(v3.code, v3.stderr).toBe(0)
    const v4 = await publisher.run(['publish', appFile(4), '--key', 'next', '--json'])
    expect(v4.code, v4.stderr).toBe(0)
    expect(v4.result.version).toBe(4)
    const target = hosts[2]!
    await until('v4 on a host', async () => await current(target) === 4 ? true : undefined)
    // A host that saw none of it walks genesis → rotation 1 from v4 alone.
    const fresh = await startDaemon(join(dir, 'fresh'), ['--bootstrap', publisher.addresses[0]!])
    hosts.push(fresh)
    expect((await fresh.run(['subscribe', id, '--json'])).code).toBe(0)
    await until('v4 on a fresh host', async () => await current(fresh) === 4 ? true : undefined)
    // The retired key can no longer publish.
    const v4m = decodeManifest(decodeEnvelope(await readFile(join(publisher.dataDir, 'appliances', id, 'v4.manifest'))).manifest)
    const forged = await signManifest(encodeManifest({ ...v4m, version: 5, disks: [{ ...v4m.disks[0]!, root: rawCid(pseudoRandom('nowhere-5', 100)) }] }), [await new KeyStore(publisher.dataDir).load('default')])
    const file = join(dir, 'old-key.bin')
    await writeFile(file, forged)
    const before = (await log(target)).length
    await attack(target, id, [file])
    const refused = await until('the old key refused', async () => (await log(target)).slice(before).find(e => e.type === 'refused'))
    expect(refused.code).toBe('ERR_UNTRUSTED_KEY')
    expect(await current(target)).toBe(4)
  }, 120_000)
})

