/**
 * The host daemon as a user meets it: commands go through it while it runs, it stops cleanly on
 * SIGTERM, and the mistakes people make (a port in use, a second daemon, an unreachable or malformed
 * bootstrap address) get one-line errors.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { existsSync, statSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { cli, expectOneLineError, tempDir } from '../helpers/cli.js'
import { pseudoRandom, writeImage } from '../helpers/images.js'
import { cborCid } from '../../src/dag/hash.js'
import { killAll, startDaemon, type TestDaemon } from '../helpers/swarm.js'

const MiB = 1024 * 1024

const expectError = expectOneLineError

describe('the host daemon', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let daemon: TestDaemon
  let blocker: Server
  let blockedPort: number

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-daemon-'))
    daemon = await startDaemon(join(dir, 'main'))
    blocker = createServer()
    await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
    blockedPort = (blocker.address() as { port: number }).port
  })

  afterAll(async () => {
    blocker?.close()
    await killAll()
    await cleanup?.()
  })

  it('owns the data dir: its control socket is 0600 and commands run through it', async () => {
    const socket = join(daemon.dataDir, 'control.sock')
    expect(statSync(socket).mode & 0o777).toBe(0o600)
    expect(statSync(join(daemon.dataDir, 'peer.key')).mode & 0o777).toBe(0o600)
    const image = join(dir, 'small.img')
    await writeImage(image, 4 * MiB, [[0, MiB, 'daemon-small']])
    // LevelDB is single-process: this import can only succeed through the daemon.
    const imported = await daemon.run(['import', image, '--name', 'small', '--json'])
    expect(imported.code, imported.stderr).toBe(0)
    const status = await daemon.run(['status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    expect(status.result).toMatchObject({ running: true, peerId: daemon.peerId, roots: 1 })
    expect(status.result.addresses).toEqual(daemon.addresses)
    // What the daemon process costs (test/util/process-stats.spec.ts counts collections).
    expect(status.result.process.cpuSeconds).toBeGreaterThan(0)
    expect(status.result.process.rssBytes).toBeGreaterThan(status.result.process.heapUsedBytes)
    expect(status.result.process.gc).toMatchObject({ major: expect.any(Number), minor: expect.any(Number), pauseMs: expect.any(Number) })
    // A relative path is the client's, not the daemon's.
    const out = await cli(['--data-dir', daemon.dataDir, 'export', 'small', 'copy.img'], { cwd: dir })
    expect(out.code, out.stderr).toBe(0)
    expect(statSync(join(dir, 'copy.img')).size).toBe(4 * MiB)
  })

  it('keeps its identity across restarts', async () => {
    const dataDir = join(dir, 'identity')
    const first = await startDaemon(dataDir)
    expect(await first.stop()).toBe(0)
    const second = await startDaemon(dataDir)
    expect(second.peerId).toBe(first.peerId)
    await second.stop()
  })

  it('a second daemon on the same data dir: ERR_DAEMON_RUNNING, exit 4', async () => {
    const r = await cli(['--data-dir', daemon.dataDir, 'daemon', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0'], { timeoutMs: 20_000 })
    expectError(r, 'ERR_DAEMON_RUNNING', 4)
  })

  it('a listen port in use: ERR_ADDRESS_IN_USE naming the address, exit 4', async () => {
    const r = await cli(['--data-dir', join(dir, 'busy'), 'daemon', '--no-mdns', '--listen', `/ip4/127.0.0.1/tcp/${blockedPort}`], { timeoutMs: 20_000 })
    expectError(r, 'ERR_ADDRESS_IN_USE', 4)
    expect(r.stderr).toContain(`/ip4/127.0.0.1/tcp/${blockedPort}`)
    // Nothing is left behind that would make the next start think a daemon runs.
    expect(existsSync(join(dir, 'busy', 'control.sock'))).toBe(false)
  })

  it('a malformed multiaddr: ERR_INVALID_CONFIG, exit 2', async () => {
    const r = await cli(['--data-dir', join(dir, 'bad'), 'daemon', '--no-mdns', '--bootstrap', 'not-a-multiaddr'], { timeoutMs: 20_000 })
    expectError(r, 'ERR_INVALID_CONFIG', 2)
  })

  it('an unreachable bootstrap peer is reported on one line; the daemon runs on', async () => {
    // A port nobody listens on (the blocker is a plain TCP server: no libp2p behind it).
    const host = await startDaemon(join(dir, 'lonely'), ['--bootstrap', `/ip4/127.0.0.1/tcp/${blockedPort}/p2p/${daemon.peerId}`])
    const deadline = Date.now() + 20_000
    while (!host.events.some(e => e.type === 'bootstrap:failed') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
    const failed = host.events.find(e => e.type === 'bootstrap:failed')
    expect(failed, host.stderr()).toBeDefined()
    expect(failed.address).toContain(String(blockedPort))
    expect(failed.reason).not.toContain('\n')
    const status = await host.run(['status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    await host.stop()
  })

  it('pull of a CID nobody has fails within its timeout, not a hang', async () => {
    const unknown = cborCid(pseudoRandom('no-such-root', 200)).toString()
    const started = Date.now()
    const r = await daemon.run(['pull', unknown, '--timeout', '3'], { timeoutMs: 30_000 })
    expectError(r, 'ERR_NO_PROVIDERS', 3)
    expect(Date.now() - started).toBeLessThan(15_000)
  })

  it('peers without a daemon: ERR_NO_DAEMON; status without one says so', async () => {
    const dataDir = join(dir, 'offline')
    expectError(await cli(['--data-dir', dataDir, 'peers']), 'ERR_NO_DAEMON', 3)
    const status = await cli(['--data-dir', dataDir, 'status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    expect(status.result).toMatchObject({ running: false, peers: 0 })
  })

  it('a daemon slow to answer (stopped for 5 s) still runs the command: no fallback to the store it holds; a daemon that never answers: ERR_DAEMON_BUSY; a killed one leaves a stale socket that is ignored', async () => {
    const slow = await startDaemon(join(dir, 'slow'))
    const image = join(dir, 'slow.img')
    await writeImage(image, 2 * MiB, [[0, MiB, 'daemon-slow']])
    try {
      // The CLI's first probe gives up after 2 s; the daemon answers only after 5 s. Run in the
      // CLI process itself, `import` would fail with ERR_STORE_LOCKED (the daemon holds the store).
      slow.proc.kill('SIGSTOP')
      const started = Date.now()
      const pending = cli(['--data-dir', slow.dataDir, 'import', image, '--name', 'slow', '--json'], { timeoutMs: 90_000 })
      await new Promise(resolve => setTimeout(resolve, 5_000))
      slow.proc.kill('SIGCONT')
      const r = await pending
      expect(r.code, r.stderr).toBe(0)
      expect(Date.now() - started).toBeGreaterThanOrEqual(5_000)
      const ls = await slow.run(['ls', '--json'])
      expect(ls.lines.some(l => l.name === 'slow'), ls.stdout).toBe(true)

      // One that stays stopped: a bounded wait, then a one-line error (never ERR_STORE_LOCKED).
      slow.proc.kill('SIGSTOP')
      const busy = await cli(['--data-dir', slow.dataDir, 'ls', '--json'], { env: { COLLECTIVE_DAEMON_WAIT_MS: '3000' }, timeoutMs: 60_000 })
      expectError(busy, 'ERR_DAEMON_BUSY', 4)
    } finally {
      slow.proc.kill('SIGCONT')
    }

    // SIGKILL leaves control.sock behind: nobody listens on it, so commands open the store here.
    await slow.kill()
    expect(existsSync(join(slow.dataDir, 'control.sock'))).toBe(true)
    const started = Date.now()
    const offline = await cli(['--data-dir', slow.dataDir, 'ls', '--json'], { timeoutMs: 60_000 })
    expect(offline.code, offline.stderr).toBe(0)
    expect(offline.lines.some(l => l.name === 'slow'), offline.stdout).toBe(true)
    expect(Date.now() - started).toBeLessThan(15_000)
  }, 180_000)

  it('SIGTERM stops it cleanly: exit 0, socket removed, the store opens offline and passes fsck', async () => {
    expect(await daemon.stop()).toBe(0)
    expect(existsSync(join(daemon.dataDir, 'control.sock'))).toBe(false)
    const fsck = await cli(['--data-dir', daemon.dataDir, 'fsck', '--json'])
    expect(fsck.code, fsck.stderr).toBe(0)
    expect(fsck.result.blocks).toBeGreaterThan(0)
  })
})
