#!/usr/bin/env node
// The quick start: generates a sparse sample disk image, imports it into a fresh data dir, exports
// it back and checks the copy is byte-identical. Prints the root CID.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, openSync, writeSync, ftruncateSync, closeSync, readFileSync, rmSync } from 'node:fs'
import { createHash, randomFillSync } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const bin = resolve(import.meta.dirname, '../bin/collective-peer.js')
const dir = mkdtempSync(join(tmpdir(), 'collective-demo-'))
try {
  const image = join(dir, 'sample.img')
  const fd = openSync(image, 'w')
  ftruncateSync(fd, 256 * 1024 * 1024)
  for (const offset of [0, 40 << 20, 200 << 20]) {
    const data = randomFillSync(Buffer.alloc(8 << 20))
    writeSync(fd, data, 0, data.length, offset)
  }
  closeSync(fd)
  const run = (...args) => execFileSync(process.execPath, [bin, '--data-dir', join(dir, 'data'), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  const result = JSON.parse(run('import', image, '--json').trim().split('\n').pop())
  run('export', result.root, join(dir, 'copy.img'))
  const hash = f => createHash('sha256').update(readFileSync(f)).digest('hex')
  if (hash(image) !== hash(join(dir, 'copy.img'))) throw new Error('the exported copy differs from the image')
  console.log(`root ${result.root}: ${result.size} bytes, ${result.blocks} blocks, ${result.bytesStored} bytes stored; export is byte-identical`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
