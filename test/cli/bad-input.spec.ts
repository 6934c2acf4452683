/**
 * Bad input through the real CLI: every mistake a user can make ends in a non-zero exit code and
 * exactly one stderr line `error [ERR_...]: message`, and leaves the store as it was (an image
 * imported before still exports byte-identical and fsck passes).
 *
 * Not tested: an unreadable file (chmod 000). The specs run as root, which reads it anyway, so such
 * a test could not fail; a gzip file stands in for "a file we cannot use".
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { CID } from 'multiformats/cid'
import { cli, spawnCli, tempDir, type CliResult } from '../helpers/cli.js'
import { pseudoRandom, writeImage, sha256File } from '../helpers/images.js'
import { cborCid, rawCid } from '../../src/dag/hash.js'

const MiB = 1024 * 1024
const ONE_LINE_ERROR = /^error \[ERR_[A-Z_]+\]: .+\n$/

/** Exit code != 0 (or exactly `exit`), and stderr is one line `error [CODE]: ...` with one of `codes`. */
function expectError (r: CliResult, codes: string | string[], exit?: number): void {
  const allowed = Array.isArray(codes) ? codes : [codes]
  const context = `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`
  expect(r.signal, context).toBeNull()
  expect(r.code, context).not.toBe(0)
  if (exit != null) expect(r.code, context).toBe(exit)
  expect(r.stderr, context).toMatch(ONE_LINE_ERROR)
  const code = /^error \[([A-Z_]+)\]/.exec(r.stderr)?.[1]
  expect(allowed, context).toContain(code)
}


/** `cmp` two (possibly large, sparse) files. */
function sameBytes (a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0
}

/** Fast deterministic data for big images (AES-CTR keyed by the seed); writeImage's SHA-256 stream is ~14 MB/s. */
async function writeFastImage (path: string, size: number, extents: Array<[number, number, string]>): Promise<void> {
  const fd = await open(path, 'w')
  try {
    await fd.truncate(size)
    for (const [offset, length, seed] of extents) {
      const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16))
      const zeros = Buffer.alloc(8 * MiB)
      for (let done = 0; done < length; done += zeros.length) {
        const n = Math.min(zeros.length, length - done)
        await fd.write(cipher.update(zeros.subarray(0, n)), 0, n, offset + done)
      }
    }
  } finally {
    await fd.close()
  }
}

describe('bad input', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let dataDir: string
  let refImage: string
  let refRoot: string
  let checks = 0

  const run = async (args: string[], timeoutMs = 30_000): Promise<CliResult> => await cli(['--data-dir', dataDir, ...args], { timeoutMs })

  /** The reference image still exports byte-identical and fsck passes. */
  async function expectStoreIntact (store = dataDir, name = 'ref', image = refImage): Promise<void> {
    const out = join(dir, `intact-${checks++}.img`)
    const exp = await cli(['--data-dir', store, 'export', name, out, '--json'], { timeoutMs: 30_000 })
    expect(exp.code, exp.stderr).toBe(0)
    expect(sameBytes(out, image), `${name} exports byte-identical`).toBe(true)
    const fsck = await cli(['--data-dir', store, 'fsck', '--json'], { timeoutMs: 30_000 })
    expect(fsck.code, fsck.stderr).toBe(0)
    expect(fsck.result.corrupt).toEqual([])
    expect(fsck.result.incomplete).toEqual([])
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-bad-input-'))
    dataDir = join(dir, 'data')
    refImage = join(dir, 'ref.img')
    await writeImage(refImage, 8 * MiB, [[0, 2 * MiB, 'ref-1'], [3 * MiB + 4096, 1 * MiB, 'ref-2'], [7 * MiB, 512 * 1024, 'ref-3']])
    const r = await run(['import', refImage, '--name', 'ref', '--json'])
    expect(r.code, r.stderr).toBe(0)
    refRoot = r.result.root
    expect(refRoot).toMatch(/^bafy/)
  })

  afterAll(async () => {
    await cleanup?.()
  })

  describe('import of something that is not a usable image', () => {
    it('a missing file: ERR_FILE_NOT_FOUND', async () => {
      const r = await run(['import', join(dir, 'no-such.img')])
      expectError(r, 'ERR_FILE_NOT_FOUND', 3)
      await expectStoreIntact()
    })

    it('a directory: ERR_FILE_ACCESS', async () => {
      const d = join(dir, 'a-directory')
      await mkdir(d, { recursive: true })
      const r = await run(['import', d])
      expectError(r, 'ERR_FILE_ACCESS', 7)
      await expectStoreIntact()
    })

    it('a zero-length file: ERR_INVALID_IMAGE', async () => {
      const f = join(dir, 'empty.img')
      await writeFile(f, '')
      const r = await run(['import', f])
      expectError(r, 'ERR_INVALID_IMAGE', 7)
      await expectStoreIntact()
    })

    it('a gzip file: ERR_UNSUPPORTED_FORMAT', async () => {
      const f = join(dir, 'disk.img.gz')
      await writeFile(f, gzipSync(pseudoRandom('gz', 256 * 1024)))
      const r = await run(['import', f])
      expectError(r, 'ERR_UNSUPPORTED_FORMAT', 7)
      await expectStoreIntact()
    })

    it('a truncated qcow2 (written by qemu-io, cut to half its size): ERR_INVALID_IMAGE', async () => {
      const f = join(dir, 'cut-io.qcow2')
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, '8M'])
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', f], { stdio: 'ignore' })
      const size = (await stat(f)).size
      await truncate(f, Math.floor(size / 2))
      const r = await run(['import', f, '--json'])
      // Reading the missing clusters as zeros would import a different disk without a word.
      expectError(r, 'ERR_INVALID_IMAGE', 7)
      await expectStoreIntact()
    })

    it('a truncated qcow2 (converted from a raw image, cut to half its size): ERR_INVALID_IMAGE', async () => {
      const f = join(dir, 'cut-convert.qcow2')
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', refImage, f])
      const size = (await stat(f)).size
      await truncate(f, Math.floor(size / 2))
      const r = await run(['import', f, '--json'])
      expectError(r, 'ERR_INVALID_IMAGE', 7)
      await expectStoreIntact()
    })
  })

  describe('unknown or malformed roots', () => {
    // Valid BLAKE3 CIDv1s (a raw leaf and a dag-cbor node) that nothing in the store hashes to.
    const unknownRaw = rawCid(pseudoRandom('not-in-store', 1000)).toString()
    const unknownNode = cborCid(pseudoRandom('not-in-store-node', 100)).toString()

    it('the unknown CIDs are well-formed BLAKE3 CIDv1', () => {
      for (const text of [unknownRaw, unknownNode]) {
        const cid = CID.parse(text)
        expect(cid.version).toBe(1)
        expect(cid.multihash.code).toBe(0x1e)
      }
    })

    it.each([
      ['export', (c: string, out: string) => ['export', c, out]],
      ['cat', (c: string) => ['cat', c]],
      ['diff (unknown new)', (c: string) => ['diff', 'ref', c]],
      ['diff (unknown old)', (c: string) => ['diff', c, 'ref']]
    ])('%s of a valid CID not in the store: ERR_BLOCK_MISSING or ERR_NOT_FOUND', async (_, args) => {
      for (const cid of [unknownRaw, unknownNode]) {
        const out = join(dir, `unknown-${checks}.img`)
        const r = await run(args(cid, out))
        expectError(r, ['ERR_BLOCK_MISSING', 'ERR_NOT_FOUND'])
        expect(r.stdout).toBe('')
        expect(existsSync(out), 'no output file for a failed export').toBe(false)
      }
      await expectStoreIntact()
    })

    it.each([
      ['export', (c: string, out: string) => ['export', c, out]],
      ['cat', (c: string) => ['cat', c]],
      ['diff', (c: string) => ['diff', 'ref', c]]
    ])('%s of a garbage string: ERR_NOT_FOUND or ERR_INVALID_CID', async (_, args) => {
      for (const garbage of ['not-a-cid!', 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz', 'bafy' + 'a'.repeat(40), 'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG']) {
        const out = join(dir, `garbage-${checks}.img`)
        const r = await run(args(garbage, out))
        expectError(r, ['ERR_NOT_FOUND', 'ERR_INVALID_CID'])
        expect(existsSync(out)).toBe(false)
      }
      await expectStoreIntact()
    })
  })

  describe('usage errors', () => {
    it.each(['12345', '1K', '2M', '0', '3000'])('--chunk-size %s: ERR_INVALID_CHUNK_SIZE', async (size) => {
      const r = await run(['import', refImage, '--name', 'other', '--chunk-size', size])
      expectError(r, 'ERR_INVALID_CHUNK_SIZE', 2)
      await expectStoreIntact()
      const pins = await run(['pin', 'ls', '--json'])
      expect(pins.lines.filter(l => l.name === 'other')).toEqual([])
    })

    it('--chunk-size 512K is valid for fixed chunks but not for fastcdc', async () => {
      const r = await run(['import', refImage, '--name', 'other', '--chunker', 'fastcdc', '--chunk-size', '512K'])
      expectError(r, 'ERR_INVALID_CHUNK_SIZE', 2)
    })

    it('--version and help: answered without a daemon or the store; help of an unknown command is ERR_USAGE', async () => {
      const { version } = JSON.parse(await readFile(join(import.meta.dirname, '../../package.json'), 'utf8'))
      for (const flag of ['--version', '-V']) {
        // Without the flag's handling, no command word means the daemon: it would start and not exit.
        const r = await run([flag], 10_000)
        expect(r.code, r.stderr).toBe(0)
        expect(r.stdout).toBe(`collective-peer ${version}\n`)
      }
      const j = await run(['--version', '--json'], 10_000)
      expect(JSON.parse(j.stdout)).toEqual({ version })
      const help = await run(['help', 'pull'])
      expect(help.code, help.stderr).toBe(0)
      expect(help.stdout).toMatch(/^Usage: collective-peer pull <cid>/)
      const global = await run(['help'])
      expect(global.stdout).toMatch(/^Usage: collective-peer <command>/)
      expectError(await run(['help', 'frobnicate']), 'ERR_USAGE', 2)
      await expectStoreIntact()
    })

    it('an unknown command: ERR_USAGE, exit 2', async () => {
      const r = await run(['frobnicate', 'x'])
      expectError(r, 'ERR_USAGE', 2)
      await expectStoreIntact()
    })

    it.each([
      [['import', 'x.img', '--bogus']],
      [['export', 'ref', 'out.img', '--no-such-flag=1']],
      [['fsck', '--verbose']]
    ])('an unknown flag %j: ERR_USAGE, exit 2', async (args) => {
      const r = await run(args)
      expectError(r, 'ERR_USAGE', 2)
      await expectStoreIntact()
    })
  })

  describe('image formats', () => {
    it('a qcow2 made from a raw image imports to the same root and exports byte-identical to the raw', async () => {
      const q = join(dir, 'ref.qcow2')
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', refImage, q])
      const r = await run(['import', q, '--name', 'ref-qcow2', '--json'])
      expect(r.code, r.stderr).toBe(0)
      expect(r.result.format).toBe('qcow2')
      expect(r.result.root).toBe(refRoot)
      expect(r.result.bytesStored).toBe(0)
      const out = join(dir, 'from-qcow2.img')
      const e = await run(['export', 'ref-qcow2', out])
      expect(e.code, e.stderr).toBe(0)
      expect(await sha256File(out)).toBe(await sha256File(refImage))
      // A compressed qcow2 cannot be read in place (converted to raw first): same root again.
      const qc = join(dir, 'ref-compressed.qcow2')
      execFileSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', refImage, qc])
      const rc = await run(['import', qc, '--name', 'ref-qcow2c', '--json'])
      expect(rc.code, rc.stderr).toBe(0)
      expect(rc.result.root).toBe(refRoot)
      await expectStoreIntact()
    })
  })

  describe('a second process', () => {
    it('cannot open the store while an import holds it: ERR_STORE_LOCKED, exit 4; the first import completes', async () => {
      const lockData = join(dir, 'lock-data')
      const big = join(dir, 'big.img')
      // 1 GiB sparse, 192 MiB of data: an import that takes seconds.
      await writeFastImage(big, 1024 * MiB, [[0, 64 * MiB, 'big-1'], [300 * MiB, 64 * MiB, 'big-2'], [700 * MiB, 64 * MiB, 'big-3']])
      const small = join(dir, 'small.img')
      await writeImage(small, 2 * MiB, [[0, 1 * MiB, 'small']])

      const first: ChildProcess = spawnCli(['--data-dir', lockData, 'import', big, '--name', 'big', '--json'])
      let stdout = ''
      let stderr = ''
      first.stdout!.on('data', d => { stdout += d })
      first.stderr!.on('data', d => { stderr += d })
      const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => first.on('close', (code, signal) => resolve({ code, signal })))
      const killer = setTimeout(() => first.kill('SIGKILL'), 60_000)
      try {
        // Wait until the first import has written block bytes into a pack.
        const packs = join(lockData, 'store', 'packs')
        const deadline = Date.now() + 20_000
        let written = 0
        while (written < 8 * MiB) {
          if (first.exitCode != null || Date.now() > deadline) throw new Error(`first import never wrote 8 MiB (exit ${first.exitCode}): ${stderr}`)
          await new Promise(resolve => setTimeout(resolve, 20))
          const names = existsSync(packs) ? await readdir(packs) : []
          written = 0
          for (const n of names) written += (await stat(join(packs, n)).catch(() => ({ size: 0 }))).size
        }

        const second = await cli(['--data-dir', lockData, 'import', small, '--name', 'small'], { timeoutMs: 30_000 })
        const fsckWhileBusy = await cli(['--data-dir', lockData, 'fsck', '--json'], { timeoutMs: 30_000 })
        // Meaningful only if the first still held the store while the others tried.
        expect(first.exitCode == null && first.signalCode == null, 'the first import was still running').toBe(true)
        expectError(second, 'ERR_STORE_LOCKED', 4)
        expectError(fsckWhileBusy, 'ERR_STORE_LOCKED', 4)

        const { code, signal } = await exited
        expect(signal).toBeNull()
        expect(code, stderr).toBe(0)
        const result = JSON.parse(stdout.trim().split('\n').pop()!)
        expect(result.size).toBe(1024 * MiB)
        expect(result.bytesStored).toBeGreaterThanOrEqual(192 * MiB)
      } finally {
        clearTimeout(killer)
        if (first.exitCode == null && first.signalCode == null) first.kill('SIGKILL')
        await exited
      }
      // The first import's root exports byte-identical; the store passes fsck; the store opens again.
      await expectStoreIntact(lockData, 'big', big)
      const after = await cli(['--data-dir', lockData, 'import', small, '--name', 'small', '--json'], { timeoutMs: 30_000 })
      expect(after.code, after.stderr).toBe(0)
    }, 90_000)
  })
})
