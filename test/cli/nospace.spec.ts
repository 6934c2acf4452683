/**
 * A full disk: the data dir is a 40 MiB tmpfs. An import that does not fit fails with
 * ERR_NO_SPACE (exit 6) and leaves the store as it was: fsck passes, earlier images export
 * byte-identical, and gc clears what the failed import left behind.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { cli, tempDir, type CliResult } from '../helpers/cli.js'
import { writeImage, sha256File } from '../helpers/images.js'
import { mountTmpfs } from '../helpers/tmpfs.js'

const MiB = 1024 * 1024

const tmpfs = mountTmpfs('40m', 'cp-nospace-mnt-')
const mountPoint = tmpfs.path
const mountError = tmpfs.error
const unmount = tmpfs.unmount
if (mountError != null) console.warn(`nospace.spec skipped: cannot mount a tmpfs (${mountError})`)


function expectOneLineError (r: CliResult, code: string, exit: number): void {
  const context = `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`
  expect(r.code, context).toBe(exit)
  expect(r.stderr, context).toMatch(/^error \[ERR_[A-Z_]+\]: .+\n$/)
  expect(r.stderr, context).toMatch(new RegExp(`^error \\[${code}\\]: `))
}

describe.skipIf(mountError != null)('a full disk (40 MiB tmpfs data dir)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let small: string
  let big: string
  /** The small image's import result (into an empty store: its blocks are all the store holds). */
  let smallImport: { blocks: number, bytesStored: number }
  const dataDir = mountPoint
  const run = async (args: string[]): Promise<CliResult> => await cli(['--data-dir', dataDir, ...args], { timeoutMs: 30_000 })

  /** The small image exports byte-identical. */
  async function expectSmallExports (label: string): Promise<void> {
    const out = join(dir, `small-${label}.img`)
    const r = await run(['export', 'small', out, '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(await sha256File(out)).toBe(await sha256File(small))
  }

  async function fsck (): Promise<CliResult> {
    return await run(['fsck', '--json'])
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-nospace-'))
    small = join(dir, 'small.img')
    big = join(dir, 'big.img')
    await writeImage(small, 8 * MiB, [[0, 2 * MiB, 'ns-small-1'], [5 * MiB, 1 * MiB, 'ns-small-2']])
    // 64 MiB of incompressible data: does not fit in what is left of 40 MiB.
    await writeImage(big, 80 * MiB, [[4 * MiB, 32 * MiB, 'ns-big-1'], [40 * MiB, 32 * MiB, 'ns-big-2']])
  })

  afterAll(async () => {
    await cleanup?.()
    unmount()
  })

  it('imports a small image', async () => {
    const r = await run(['import', small, '--name', 'small', '--json'])
    expect(r.code, r.stderr).toBe(0)
    smallImport = r.result
    await expectSmallExports('first')
  })

  it('an image that does not fit: exit 6, one line error [ERR_NO_SPACE]', async () => {
    const r = await run(['import', big, '--name', 'big', '--json'])
    expectOneLineError(r, 'ERR_NO_SPACE', 6)
    expect(r.result?.error?.code).toBe('ERR_NO_SPACE')
    const pins = await run(['pin', 'ls', '--json'])
    expect(pins.code, pins.stderr).toBe(0)
    expect(pins.lines.filter(l => l.name != null).map(l => l.name)).toEqual(['small'])
  })

  it('after the failed import, fsck passes (no index entry points at bytes that were never written)', async () => {
    const r = await fsck()
    expect(r.result?.corrupt?.length, `corrupt blocks: ${r.result?.corrupt?.length}`).toBe(0)
    expect(r.result?.incomplete).toEqual([])
    expect(r.code, r.stderr).toBe(0)
  })

  it('the first image still exports byte-identical', async () => {
    await expectSmallExports('after-enospc')
  })

  it('gc drops the failed import\'s unpinned blocks and the store still passes fsck', async () => {
    const gc = await run(['gc', '--json'])
    expect(gc.code, gc.stderr).toBe(0)
    console.log(`nospace.spec: gc ${JSON.stringify(gc.result)}`)
    const after = await fsck()
    expect(after.code, after.stderr).toBe(0)
    expect(after.result.corrupt).toEqual([])
    expect(after.result.incomplete).toEqual([])
    await expectSmallExports('after-gc')
    // Only the small image's blocks are left in the index.
    expect(after.result.blocks).toBe(smallImport.blocks)
    expect(after.result.bytes).toBe(smallImport.bytesStored)
  })
})
