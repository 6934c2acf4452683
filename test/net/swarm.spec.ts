/**
 * The swarm with real daemon processes on 127.0.0.1: connected hosts open block streams to each other
 * before any pull; several hosts pull a real image from each other
 * (byte-identical at every host), an image whose regions repeat is pulled whole, the source leaves
 * mid-way and a host finishes from another, and a host killed with SIGKILL mid-pull resumes without
 * fetching again what it had verified.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { open } from 'node:fs/promises'
import { randomBytes, randomFillSync } from 'node:crypto'
import { tempDir, until } from '../helpers/cli.js'
import { rawCid } from '../../src/dag/hash.js'
import { writeImage, sha256File } from '../helpers/images.js'
import { killAll, spawnWatched, startDaemon, type TestDaemon } from '../helpers/swarm.js'

const MiB = 1024 * 1024


describe('swarm: daemons exchanging a real image on 127.0.0.1', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let image: string
  let imageHash: string
  let root: string
  let dataBytes: number
  let seeder: TestDaemon

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-swarm-'))
    image = join(dir, 'disk.img')
    // 128 MiB disk, 72 MiB of incompressible data in three extents, holes between.
    await writeImage(image, 128 * MiB, [[0, 24 * MiB, 'swarm-a'], [40 * MiB, 24 * MiB, 'swarm-b'], [100 * MiB, 24 * MiB, 'swarm-c']])
    imageHash = await sha256File(image)
    seeder = await startDaemon(join(dir, 'seeder'))
    const imported = await seeder.run(['import', image, '--name', 'disk', '--json'])
    expect(imported.code, imported.stderr).toBe(0)
    root = imported.result.root
    dataBytes = imported.result.bytesStored
  }, 120_000)

  afterAll(async () => {
    await killAll()
    await cleanup?.()
  })

  async function expectIdentical (host: TestDaemon, label: string, of = { root, imageHash }): Promise<void> {
    const out = join(dir, `${label}.img`)
    const r = await host.run(['export', of.root, out, '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(await sha256File(out), `${label}: exported image differs`).toBe(of.imageHash)
    const fsck = await host.run(['fsck', '--json'])
    expect(fsck.code, fsck.stderr).toBe(0)
    expect(fsck.result.corrupt).toEqual([])
  }

  it('hosts that connect open their block streams to each other at once, before any pull', async () => {
    const host = await startDaemon(join(dir, 'streams'), ['--bootstrap', seeder.addresses[0]!])
    // Both ways: the host's stream to the seeder, and the seeder's to the host.
    const streamTo = async (daemon: TestDaemon, peer: string): Promise<boolean> => {
      const r = await daemon.run(['peers', '--json'])
      expect(r.code, r.stderr).toBe(0)
      return r.lines.some(l => l.peer === peer && l.blockStream === true)
    }
    const deadline = Date.now() + 15_000
    let both = false
    while (!both && Date.now() < deadline) {
      both = await streamTo(host, seeder.peerId) && await streamTo(seeder, host.peerId)
      if (!both) await new Promise(resolve => setTimeout(resolve, 200))
    }
    expect(both, 'block streams open between two connected daemons that pulled nothing').toBe(true)
    const status = await host.run(['status', '--json'])
    expect(status.result.transfer.bytesReceived).toBe(0)
    expect(await host.stop()).toBe(0)
  }, 60_000)

  it('three hosts pull at once from the seeder and from each other; every copy is byte-identical', async () => {
    const hosts = await Promise.all(['b', 'c', 'd'].map(async name => await startDaemon(join(dir, `three-${name}`), ['--bootstrap', seeder.addresses[0]!])))
    const pulls = await Promise.all(hosts.map(async host => await host.run(['pull', root, '--name', 'disk', '--json'])))
    for (const [i, r] of pulls.entries()) {
      expect(r.code, `host ${i}: ${r.stderr}`).toBe(0)
      expect(r.result.root).toBe(root)
      expect(r.result.bytesFetched).toBe(dataBytes)
    }
    for (const [i, host] of hosts.entries()) await expectIdentical(host, `three-${i}`)
    // The seeder's status reports what it uploaded; the hosts list the seeder among their peers.
    const status = await seeder.run(['status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    expect(status.result.peerId).toBe(seeder.peerId)
    expect(status.result.transfer.bytesSent).toBeGreaterThan(0)
    // A seed whose upload is contended sends each block about once, and sends the other askers
    // ELSEWHERE (measured: 1.005x the data; 2.1-2.2x before it did).
    expect(status.result.transfer.bytesSent / dataBytes, 'seeder upload / data').toBeLessThan(1.5)
    // Hosts that start together serve each other what they already have (BitTorrent's trick).
    const uploads = await Promise.all(hosts.map(async h => (await h.run(['status', '--json'])).result.transfer.bytesSent as number))
    expect(uploads.reduce((a, b) => a + b, 0), `bytes the hosts sent each other: ${uploads.join(', ')}`).toBeGreaterThan(0)
    const peers = await hosts[0]!.run(['peers', '--json'])
    expect(peers.lines.some(l => l.peer === seeder.peerId)).toBe(true)
    await Promise.all(hosts.map(async h => { expect(await h.stop()).toBe(0) }))
  }, 180_000)

  it('a pull whose seed is connected leaves the DHT alone at its start; with none connected it searches at once', async () => {
    const host = await startDaemon(join(dir, 'dht'), ['--bootstrap', seeder.addresses[0]!], { env: { DEBUG: 'collective:*' } })
    await until('a block stream to the seeder', async () => (await host.run(['peers', '--json'])).lines.some(l => l.peer === seeder.peerId && l.blockStream === true) ? true : undefined, 15_000)
    const searches = (): number => host.stderr().split('\n').filter(l => l.includes('searching the DHT for providers of')).length
    const before = searches()
    // The seeder answers INTEREST with HAVE all: the pull has a source, and its first provider search
    // would come 10 s in (the pull takes ~1 s). Without that rule it searched in its first ms.
    const pulled = await host.run(['pull', root, '--json'])
    expect(pulled.code, pulled.stderr).toBe(0)
    expect(searches() - before, 'DHT searches during a pull from a connected seed').toBe(0)
    // A root no connected peer holds: the search starts once they answered, well before the timeout.
    const missing = rawCid(randomBytes(64)).toString()
    const started = Date.now()
    const none = await host.run(['pull', missing, '--timeout', '3'])
    expect(none.code, none.stderr).toBe(3)
    const line = host.stderr().split('\n').find(l => l.includes(`searching the DHT for providers of ${missing}`))
    expect(line, 'no DHT search for a root no connected peer holds').toBeDefined()
    // DEBUG lines start with an ISO time: the search began within the seed-answer wait (1 s) of the pull.
    expect(Date.parse(line!.trim().split(' ')[0]!) - started).toBeLessThan(2_000)
    expect(await host.stop()).toBe(0)
  }, 60_000)

  it('an image whose regions repeat (a run of one non-zero byte: the same node twice in a level) is pulled whole', async () => {
    // 16 MiB of 0xab between random data: identical chunks, so identical level-1 nodes. Before,
    // the second request for one node replaced the first's waiter and the pull hung.
    const repeated = join(dir, 'repeated.img')
    const fd = await open(repeated, 'w')
    try {
      await fd.write(randomFillSync(new Uint8Array(MiB)), 0, MiB, 0)
      await fd.write(new Uint8Array(16 * MiB).fill(0xab), 0, 16 * MiB, MiB)
      await fd.write(randomFillSync(new Uint8Array(MiB)), 0, MiB, 17 * MiB)
    } finally {
      await fd.close()
    }
    const imported = await seeder.run(['import', repeated, '--name', 'repeated', '--json'])
    expect(imported.code, imported.stderr).toBe(0)
    const of = { root: imported.result.root as string, imageHash: await sha256File(repeated) }
    const host = await startDaemon(join(dir, 'repeated-host'), ['--bootstrap', seeder.addresses[0]!])
    const r = await host.run(['pull', of.root, '--json'], { timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(0)
    // Distinct blocks, as the import counted them (each repeated node once).
    expect(r.result.blocks).toBe(imported.result.blocks)
    await expectIdentical(host, 'repeated', of)
    expect(await host.stop()).toBe(0)
  }, 120_000)

  it('the source leaves mid-way: the host finishes from another host that holds the image', async () => {
    const source = await startDaemon(join(dir, 'leave-source'))
    const imported = await source.run(['import', image, '--name', 'disk', '--json'])
    expect(imported.code, imported.stderr).toBe(0)
    const holder = await startDaemon(join(dir, 'leave-holder'), ['--bootstrap', source.addresses[0]!])
    expect((await holder.run(['pull', root, '--json'])).code).toBe(0)
    // The seeder of the suite stays out of this one: only `source` and `holder` have the image.
    const late = await startDaemon(join(dir, 'leave-late'), ['--bootstrap', source.addresses[0]!, '--bootstrap', holder.addresses[0]!])
    let fetchedAtLeave: number | undefined
    const pull = spawnWatched(['--data-dir', late.dataDir, 'pull', root, '--json'], event => {
      if (event.type === 'pull:progress' && fetchedAtLeave == null && event.bytesFetched > 0) {
        fetchedAtLeave = event.bytesFetched
        void source.kill()
      }
    })
    const result = await pull.done
    expect(result.code, result.stderr).toBe(0)
    expect(fetchedAtLeave, 'the source left before the first progress event').toBeDefined()
    expect(fetchedAtLeave!).toBeLessThan(dataBytes)
    expect(result.last.bytesFetched).toBe(dataBytes)
    await expectIdentical(late, 'leave-late')
  }, 180_000)

  it('a host killed with SIGKILL mid-pull resumes: fsck is clean and verified blocks are not fetched again', async () => {
    // An image of its own, large enough that the pull is still running when a commit has landed
    // (progress comes every 200 ms; the suite's 72 MiB can be pulled in less than two of those).
    const big = join(dir, 'resume-source.img')
    const fd = await open(big, 'w')
    try {
      const chunk = new Uint8Array(16 * MiB)
      for (let i = 0; i < 12; i++) await fd.write(randomFillSync(chunk), 0, chunk.length, i * chunk.length)
    } finally {
      await fd.close()
    }
    const bigImported = await seeder.run(['import', big, '--name', 'resume', '--json'])
    expect(bigImported.code, bigImported.stderr).toBe(0)
    const of = { root: bigImported.result.root as string, imageHash: await sha256File(big) }
    const bigBytes = bigImported.result.bytesStored as number
    const dataDir = join(dir, 'resume')
    let host = await startDaemon(dataDir, ['--bootstrap', seeder.addresses[0]!])
    let fetchedAtKill: number | undefined
    const pull = spawnWatched(['--data-dir', dataDir, 'pull', of.root, '--json'], event => {
      // Once some of what was fetched is durable, and before the pull is done.
      if (event.type === 'pull:progress' && fetchedAtKill == null && event.bytesCommitted > 0 && event.bytesFetched < bigBytes) {
        fetchedAtKill = event.bytesFetched
        void host.kill()
      }
    })
    const killed = await pull.done
    expect(fetchedAtKill, `the pull ended before it could be killed: ${killed.stderr}`).toBeDefined()
    expect(killed.code).not.toBe(0)
    expect(killed.stderr).toMatch(/^error \[ERR_DAEMON_LOST\]: .+\n$/)

    host = await startDaemon(dataDir, ['--bootstrap', seeder.addresses[0]!])
    const fsck = await host.run(['fsck', '--json'])
    expect(fsck.code, fsck.stderr).toBe(0)
    expect(fsck.result.corrupt).toEqual([])
    const kept = fsck.result.bytes as number
    expect(kept, 'nothing survived the kill').toBeGreaterThan(0)
    // Blocks written but not committed survive too (the store indexes them on open): lost are at most
    // those not yet written, the session's unstored bytes (maxUnstored, plus a window in flight).
    expect(kept).toBeGreaterThanOrEqual(fetchedAtKill! - 13 * MiB)
    const resumed = await host.run(['pull', of.root, '--json'])
    expect(resumed.code, resumed.stderr).toBe(0)
    // Only what the store did not keep crosses the network again.
    expect(resumed.result.bytesFetched).toBeLessThan(bigBytes)
    expect(resumed.result.bytesFetched).toBeLessThanOrEqual(bigBytes - kept + 1024 * 1024)
    await expectIdentical(host, 'resume', of)
  }, 180_000)
})
