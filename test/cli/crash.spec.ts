/**
 * Crash safety: an import killed with SIGKILL at any moment leaves a store that passes fsck, and
 * the next import reuses every block the killed runs committed (the store commits every 64 MiB of
 * new bytes and at the end).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { cli, spawnCli, tempDir } from '../helpers/cli.js'
import { writeImage, sha256File } from '../helpers/images.js'

const MiB = 1024 * 1024
const KILLS = 8

// 176 MiB image, 160 MiB of data in three extents (two commits' worth, then the final one).
const IMAGE_SIZE = 176 * MiB
const EXTENTS: Array<[number, number, string]> = [
  [0, 24 * MiB, 'crash-1'],
  [28 * MiB + 4096, 24 * MiB, 'crash-2'],
  [56 * MiB, 112 * MiB, 'crash-3']
]
const DATA_SIZE = EXTENTS.reduce((n, [, length]) => n + length, 0)


interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  ms: number
  stdout: string
  stderr: string
  /** Largest bytesStored any progress line reported. */
  maxStored: number
}

/**
 * Runs `import` and SIGKILLs it after `delayMs`, or as soon as a progress line reports at least
 * `killAtStored` bytes stored (whichever is given).
 */
async function importAndKill (args: string[], opts: { delayMs?: number, killAtStored?: number }): Promise<Run> {
  const started = Date.now()
  const child = spawnCli(args)
  let stdout = ''
  let stderr = ''
  let maxStored = 0
  const kill = (): void => { if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL') }
  child.stdout!.on('data', d => {
    stdout += d
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('{"type":"import:progress"')) continue
      try {
        maxStored = Math.max(maxStored, JSON.parse(line).bytesStored)
      } catch {}
    }
    if (opts.killAtStored != null && maxStored >= opts.killAtStored) kill()
  })
  child.stderr!.on('data', d => { stderr += d })
  const timer = opts.delayMs != null ? setTimeout(kill, opts.delayMs) : undefined
  const guard = setTimeout(kill, 30_000)
  const { code, signal } = await new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    child.on('close', (code, signal) => resolve({ code, signal }))
  })
  clearTimeout(timer)
  clearTimeout(guard)
  return { code, signal, ms: Date.now() - started, stdout, stderr, maxStored }
}

describe('crash safety: SIGKILL during import', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let image: string

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-crash-'))
    image = join(dir, 'disk.img')
    await writeImage(image, IMAGE_SIZE, EXTENTS)
  })

  afterAll(async () => {
    await cleanup?.()
  })

  it('every killed import leaves a store that passes fsck; the final import resumes and is byte-identical', async () => {
    // A full import in a separate store: how long one takes, and how many bytes it stores.
    const calibration = await importAndKill(['--data-dir', join(dir, 'calibration'), 'import', image, '--json'], {})
    expect(calibration.code, calibration.stderr).toBe(0)
    const full = JSON.parse(calibration.stdout.trim().split('\n').pop()!)
    const fullBytes: number = full.bytesStored
    expect(fullBytes).toBeGreaterThan(DATA_SIZE)
    const fullMs = calibration.ms

    const dataDir = join(dir, 'data')
    const args = ['--data-dir', dataDir, 'import', image, '--name', 'disk', '--json']
    const log: string[] = [`full import: ${fullMs} ms, ${fullBytes} bytes`]
    /** Killed runs after which the store held more of the image than before (a commit landed; maybe all blocks, never the pin). */
    let killedAfterCommit = 0
    let completed = 0
    let storeBytes = 0
    const checkStore = async (label: string): Promise<{ blocks: number, bytes: number }> => {
      const fsck = await cli(['--data-dir', dataDir, 'fsck', '--json'], { timeoutMs: 30_000 })
      expect(fsck.code, `${label}: fsck ${fsck.stderr}`).toBe(0)
      expect(fsck.result.corrupt, label).toEqual([])
      expect(fsck.result.incomplete, label).toEqual([])
      return { blocks: fsck.result.blocks, bytes: fsck.result.bytes }
    }
    const killed = async (label: string, opts: { delayMs?: number, killAtStored?: number }): Promise<void> => {
      const run = await importAndKill(args, opts)
      if (run.signal !== 'SIGKILL') {
        expect(run.code, `${label}: ${run.stderr}`).toBe(0)
        completed++
      }
      const before = storeBytes
      const state = await checkStore(label)
      storeBytes = state.bytes
      if (run.signal === 'SIGKILL' && state.bytes > before) killedAfterCommit++
      log.push(`${label}: ${run.signal ?? `exit ${run.code}`} after ${run.ms} ms, progress saw ${run.maxStored} bytes stored; store has ${state.blocks} blocks, ${state.bytes} bytes`)
    }

    // First a kill past the first commit (commits run in the background, so a kill right after the
    // 64 MiB mark may land before it is durable: then try again a little later). Past 128 MiB the
    // first commit has landed for sure (the store waits for it before starting the second), and the
    // import still has to write and commit the rest: the import is too fast for timed kills to
    // count on landing between two commits.
    for (const threshold of [64, 70, 76, 82, 130, 136, 142].map(n => n * MiB)) {
      await killed(`kill once ${threshold / MiB} MiB are stored`, { killAtStored: threshold })
      if (storeBytes > 0) break
    }

    // Then kill points spread over [50 ms, a full import]: one random point in each of KILLS strata.
    for (let i = 0; i < KILLS; i++) {
      const delayMs = Math.round(50 + (fullMs - 50) * (i + Math.random()) / KILLS)
      await killed(`run ${i} (kill at ${delayMs} ms)`, { delayMs })
    }
    console.log(`crash.spec: ${log.join('\n  ')}\n  killed after a commit: ${killedAfterCommit}, completed: ${completed}`)
    expect(killedAfterCommit, 'a killed run left committed blocks behind').toBeGreaterThan(0)
    const committed = storeBytes

    // The final import stores exactly what the killed runs had not committed.
    const final = await cli(args, { timeoutMs: 30_000 })
    expect(final.code, final.stderr).toBe(0)
    expect(final.result.root).toBe(full.root)
    expect(final.result.bytesStored).toBe(fullBytes - committed)
    expect(final.result.bytesStored).toBeLessThan(DATA_SIZE)
    await checkStore('after the final import')

    // Byte-identical export.
    const out = join(dir, 'export.img')
    const exp = await cli(['--data-dir', dataDir, 'export', 'disk', out, '--json'], { timeoutMs: 30_000 })
    expect(exp.code, exp.stderr).toBe(0)
    expect(exp.result.size).toBe(IMAGE_SIZE)
    expect(await sha256File(out)).toBe(await sha256File(image))

    // A re-import stores nothing new.
    const again = await cli(args, { timeoutMs: 30_000 })
    expect(again.code, again.stderr).toBe(0)
    expect(again.result.root).toBe(full.root)
    expect(again.result.bytesStored).toBe(0)
  }, 90_000)
})
