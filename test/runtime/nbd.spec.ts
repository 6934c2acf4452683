import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openStore, type Store } from '../../src/store/index.js'
import { importImage } from '../../src/dag/index.js'
import { NbdServer, FileExport } from '../../src/runtime/nbd/index.js'
import { DiskExports } from '../../src/runtime/disk-exports.js'
import { writeImage, pseudoRandom } from '../helpers/images.js'
import { tempDir } from '../helpers/cli.js'
import { RawNbd, goData, metaContextData } from './helpers/raw-nbd.js'
import type { NbdEvent } from '../../src/runtime/interface.js'

const exec = promisify(execFile)
const MiB = 1024 * 1024
// Not a multiple of the chunk size; a multiple of 512 (QEMU rounds NBD sizes to sectors).
const SIZE = 6 * MiB + 1536
const EXTENTS: Array<[number, number, string]> = [[0, 300_000, 'a'], [2 * MiB, MiB, 'b'], [SIZE - 1000, 1000, 'c']]

describe('NBD server', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let server: NbdServer
  let socket: string
  let root: string
  let image: string
  let scratch: string
  const events: NbdEvent[] = []
  const uri = (name: string): string => `nbd+unix:///${name}?socket=${socket}`

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('cp-nbd-'))
    store = await openStore(join(dir, 'data'))
    image = join(dir, 'disk.img')
    await writeImage(image, SIZE, EXTENTS)
    root = (await importImage(store.blocks, image, { chunker: { kind: 'fixed', size: 65536 }, tmpDir: dir })).root.toString()
    // A writable scratch disk, to drive WRITE / WRITE_ZEROES / TRIM / FLUSH with real clients.
    scratch = join(dir, 'scratch.img')
    await writeFile(scratch, Buffer.alloc(4 * MiB))
    const exports = new DiskExports(store.blocks)
    const scratchExport = await FileExport.open(scratch)
    socket = join(dir, 'nbd.sock')
    server = new NbdServer({
      path: socket,
      resolve: async (name, options) => name === 'scratch' ? scratchExport : await exports.resolve(name, options),
      list: () => [root, 'scratch'],
      onEvent: e => { events.push(e) }
    })
    await server.listen()
  })
  afterAll(async () => {
    await server?.close()
    await store?.close()
    await cleanup()
  })

  it('listens on a 0600 unix socket', async () => {
    expect((await stat(socket)).mode & 0o777).toBe(0o600)
  })

  it('nbdinfo sees the size, a read-only export, base:allocation and every export', async () => {
    const { stdout } = await exec('nbdinfo', ['--json', uri(root)])
    const info = JSON.parse(stdout)
    const exp = info.exports[0]
    expect(exp['export-size']).toBe(SIZE)
    expect(exp.is_read_only).toBe(true)
    expect(exp.contexts).toContain('base:allocation')
    expect(exp.block_size_maximum).toBe(32 * MiB)
    const list = await exec('nbdinfo', ['--list', '--json', uri('')])
    expect(JSON.parse(list.stdout).exports.map((e: any) => e['export-name']).sort()).toEqual([root, 'scratch'].sort())
  })

  it('nbdinfo --map reports holes as zero/hole and data as data', async () => {
    const { stdout } = await exec('nbdinfo', ['--map', uri(root)])
    const map = stdout.trim().split('\n').map(line => line.trim().split(/\s+/)).map(([o, l, t]) => [Number(o), Number(l), Number(t)])
    expect(map).toEqual([
      [0, 327_680, 0],
      [327_680, 2 * MiB - 327_680, 3],
      [2 * MiB, MiB, 0],
      [3 * MiB, 3 * MiB, 3],
      [6 * MiB, 1536, 0]
    ])
  })

  it('nbdcopy and qemu-img read back byte-identical data', async () => {
    const out = join(dir, 'nbdcopy.img')
    await exec('nbdcopy', [uri(root), out])
    expect(Buffer.compare(await readFile(out), await readFile(image))).toBe(0)
    const compare = await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, uri(root)])
    expect(compare.stdout).toContain('Images are identical')
    const converted = join(dir, 'converted.img')
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(root), converted])
    expect(Buffer.compare(await readFile(converted), await readFile(image))).toBe(0)
  })

  it('serves WRITE, WRITE_ZEROES, TRIM and FLUSH on a writable export (qemu-io, nbdcopy)', async () => {
    const data = join(dir, 'data.bin')
    await writeFile(data, pseudoRandom('w', 4 * MiB))
    await exec('nbdcopy', [data, uri('scratch')])
    expect(Buffer.compare(await readFile(scratch), await readFile(data))).toBe(0)
    await exec('qemu-io', ['-f', 'raw', '-c', 'write -z 65536 131072', '-c', 'discard 1048576 65536', '-c', 'write -P 0xab 0 512', '-c', 'flush', uri('scratch')])
    const after = await readFile(scratch)
    expect(after.subarray(65536, 65536 + 131072).every(b => b === 0)).toBe(true)
    expect(after.subarray(0, 512).every(b => b === 0xab)).toBe(true)
    expect(Buffer.compare(after.subarray(512, 65536), (await readFile(data)).subarray(512, 65536))).toBe(0)
  })

  it('refuses writes to a read-only export (qemu-io gets EPERM)', async () => {
    const result = await exec('qemu-io', ['-f', 'raw', '-c', 'write 0 4096', uri(root)]).catch(err => err)
    expect(String(result.stdout) + String(result.stderr)).toMatch(/read-only|Operation not permitted|Permission denied/i)
  })

  it('answers options: zero-length GO, unknown option, unknown export, LIST, INFO one reply each, ABORT', async () => {
    const c = await RawNbd.connect(socket)
    await c.handshake()
    c.option(7) // OPT_GO with no data at all
    expect((await c.optionReply())?.type).toBe(0x80000003) // ERR_INVALID
    c.option(99, Buffer.from('whatever'))
    expect((await c.optionReply())?.type).toBe(0x80000001) // ERR_UNSUP
    c.option(6, goData('no-such-export', []))
    expect((await c.optionReply())?.type).toBe(0x80000006) // ERR_UNKNOWN
    c.option(10, metaContextData(root, ['base:allocation']))
    expect((await c.optionReply())?.type).toBe(0x80000003) // meta context before structured replies
    c.option(3)
    const names: string[] = []
    for (let r = await c.optionReply(); r?.type === 2; r = await c.optionReply()) names.push(r.data.toString('utf8', 4))
    expect(names.sort()).toEqual([root, 'scratch'].sort())
    c.option(6, goData(root, [1, 2, 3])) // INFO: name, description, block size
    const infos: number[] = []
    for (let r = await c.optionReply(); r != null; r = await c.optionReply()) {
      if (r.type === 1) break
      expect(r.type).toBe(3)
      infos.push(r.data.readUInt16BE(0))
    }
    expect(infos).toEqual([0, 1, 2, 3])
    c.option(2)
    expect((await c.optionReply())?.type).toBe(1)
    expect(await c.closed()).toBe(true)
  })

  it('answers bad requests with errors and keeps serving the connection', async () => {
    const c = await RawNbd.connect(socket)
    await c.handshake()
    const size = await c.go(root)
    expect(size).toBe(SIZE)
    c.request(0, SIZE - 10, 20, { cookie: 1n }) // past the end
    expect((await c.reply())).toMatchObject({ cookie: 1n, error: 22 })
    c.request(42, 0, 512, { cookie: 2n }) // unknown command
    expect((await c.reply())).toMatchObject({ cookie: 2n, error: 22 })
    c.request(1, 0, 4096, { cookie: 3n, payload: Buffer.alloc(4096, 7) }) // write to a read-only export
    expect((await c.reply())).toMatchObject({ cookie: 3n, error: 1 })
    c.request(7, 0, 4096, { cookie: 4n }) // BLOCK_STATUS without a meta context
    expect((await c.reply())).toMatchObject({ cookie: 4n, error: 22 })
    c.request(0, 0, 64 * MiB, { cookie: 5n }) // larger than the request limit
    expect((await c.reply())).toMatchObject({ cookie: 5n, error: 22 })
    c.request(0, 0, 512, { cookie: 6n, flags: 0x10 }) // a flag READ does not take
    expect((await c.reply())).toMatchObject({ cookie: 6n, error: 22 })
    c.request(0, 2 * MiB, 4096, { cookie: 7n })
    const read = await c.reply()
    expect(read).toMatchObject({ cookie: 7n, error: 0, type: 1 })
    expect(Number(read!.payload.readBigUInt64BE(0))).toBe(2 * MiB)
    expect(Buffer.compare(read!.payload.subarray(8), Buffer.from(pseudoRandom('b', 4096)))).toBe(0)
    c.request(2, 0, 0) // DISC
    expect(await c.closed()).toBe(true)
  })

  it('BLOCK_STATUS with REQ_ONE returns one extent', async () => {
    const c = await RawNbd.connect(socket)
    await c.handshake()
    await c.go(root, { meta: true })
    c.request(7, 0, SIZE, { cookie: 9n, flags: 8 })
    const reply = await c.reply()
    expect(reply).toMatchObject({ type: 5, error: 0 })
    expect(reply!.payload.length).toBe(4 + 8)
    expect(reply!.payload.readUInt32BE(4)).toBe(327_680)
    c.destroy()
  })

  it('closes connections that break framing and keeps serving others', async () => {
    const bad = await RawNbd.connect(socket)
    await bad.handshake()
    await bad.go(root)
    bad.write(Buffer.alloc(28, 0xff)) // bad request magic
    expect(await bad.closed()).toBe(true)

    const huge = await RawNbd.connect(socket)
    await huge.handshake()
    const header = Buffer.alloc(16)
    header.write('IHAVEOPT', 0, 'latin1')
    header.writeUInt32BE(7, 8)
    header.writeUInt32BE(0xffffffff, 12) // a 4 GiB option
    huge.write(header)
    expect(await huge.closed()).toBe(true)

    const flags = await RawNbd.connect(socket)
    await flags.read(18)
    flags.write(Buffer.from([0, 0, 0, 0xff])) // unknown client flags
    expect(await flags.closed()).toBe(true)

    // Disconnects in the middle of a request header, of a WRITE payload, and of the handshake.
    for (const cut of [10, 28 + 100]) {
      const c = await RawNbd.connect(socket)
      await c.handshake()
      await c.go('scratch')
      const header = Buffer.alloc(28)
      header.writeUInt32BE(0x25609513, 0)
      header.writeUInt16BE(1, 6)
      header.writeUInt32BE(4096, 24)
      c.write(Buffer.concat([header, Buffer.alloc(4096)]).subarray(0, cut))
      c.destroy()
    }
    const early = await RawNbd.connect(socket)
    early.destroy()

    const { stdout } = await exec('nbdinfo', ['--size', uri(root)])
    expect(Number(stdout.trim())).toBe(SIZE)
    expect(events.some(e => e.type === 'nbd:violation')).toBe(true)
  })

  it('survives random bytes at every stage', async () => {
    for (let i = 0; i < 30; i++) {
      const c = await RawNbd.connect(socket)
      const junk = Buffer.from(pseudoRandom(`junk${i}`, 64 + i * 97))
      if (i % 3 === 1) await c.handshake()
      if (i % 3 === 2) { await c.handshake(); await c.go(root, { meta: true }) }
      // Keep the request magic sometimes so the junk reaches command parsing.
      if (i % 3 === 2 && i % 2 === 0) junk.writeUInt32BE(0x25609513, 0)
      c.write(junk)
      await new Promise(resolve => setTimeout(resolve, 5))
      c.destroy()
    }
    const out = join(dir, 'after-junk.img')
    await exec('nbdcopy', [uri(root), out])
    expect(Buffer.compare(await readFile(out), await readFile(image))).toBe(0)
  })
})
