/**
 * A process killed between its writes and their commit: the next open indexes the records that
 * reached the pack, each hashed first, and cuts what follows the last good one (a torn write,
 * garbage, a record whose bytes changed on disk). The writer is a real process, killed with SIGKILL.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { appendFile, open, stat, type FileHandle } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { Blockstore } from '../../src/store/blockstore.js'
import { rawCid } from '../../src/dag/hash.js'
import { packName, RECORD_HEADER } from '../../src/store/packs.js'
import { BIN, cli, tempDir } from '../helpers/cli.js'

const WRITER = fileURLToPath(new URL('../fixtures/store-writer.mjs', import.meta.url))
const COUNT = 40
const COMMITTED = 10
const SIZE = 48 * 1024
/** Every record of the fixture's blocks: header, a 36-byte CID, the payload. */
const RECORD = RECORD_HEADER + 36 + SIZE

/** Runs the writer in `dir`, SIGKILLs it once its writes landed, and returns its blocks' CIDs. */
async function writeAndKill (dir: string): Promise<CID[]> {
  const child = spawn(process.execPath, [WRITER, dir, String(COUNT), String(COMMITTED), String(SIZE)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', d => { stderr += d })
  const cids = await new Promise<CID[]>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the writer did not get ready: ${stderr}`)) }, 20_000)
    child.stdout.on('data', d => {
      stdout += d
      if (!stdout.includes('\n')) return
      clearTimeout(timer)
      resolve((JSON.parse(stdout.split('\n')[0]!).cids as string[]).map(c => CID.parse(c)))
    })
    child.on('exit', code => { clearTimeout(timer); reject(new Error(`the writer exited (${code}): ${stderr}`)) })
  })
  const exited = new Promise(resolve => child.on('exit', resolve))
  child.kill('SIGKILL')
  await exited
  return cids
}

/** Changes the writer's pack on disk: its records alone (a direct write's padding cut off), then `edit`. */
async function editPack (pack: string, edit: (file: FileHandle) => Promise<void>): Promise<void> {
  const file = await open(pack, 'r+')
  try {
    await file.truncate(COUNT * RECORD)
    await edit(file)
  } finally {
    await file.close()
  }
}

async function present (store: Blockstore, cids: CID[]): Promise<boolean[]> {
  return await Promise.all(cids.map(async cid => await store.has(cid)))
}

describe('Blockstore recovery after a kill', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeAll(async () => { ({ dir, cleanup } = await tempDir('cp-recovery-')) })
  afterAll(async () => { await cleanup() })

  /** A store in `name` that the writer was killed on, its blocks, and its pack. */
  const killed = async (name: string): Promise<{ data: string, cids: CID[], pack: string }> => {
    const data = join(dir, name)
    return { data, cids: await writeAndKill(data), pack: join(data, 'packs', packName(1)) }
  }

  it('indexes the blocks written but not committed, verified, and only once', async () => {
    const { data, cids, pack } = await killed('whole')
    const store = await Blockstore.open(data)
    try {
      expect(store.recovered).toEqual({ blocks: COUNT - COMMITTED, bytes: (COUNT - COMMITTED) * SIZE })
      expect(await present(store, cids)).toEqual(cids.map(() => true))
      // Read back (and hashed again on the way).
      for (const cid of cids) expect((await store.get(cid)).length).toBe(SIZE)
      // Anything after the last record (a direct write's padding) is cut.
      expect((await stat(pack)).size).toBe(COUNT * RECORD)
    } finally {
      await store.close()
    }
    const again = await Blockstore.open(data)
    try {
      expect(again.recovered).toEqual({ blocks: 0, bytes: 0 })
      expect(await present(again, cids)).toEqual(cids.map(() => true))
    } finally {
      await again.close()
    }
  }, 60_000)

  it('stops at the first record that is torn, garbage or does not hash to its CID, and cuts the rest', async () => {
    const { data, cids, pack } = await killed('damaged')
    // One byte of block 25's payload changed on disk, and garbage after the last record.
    const bad = 25
    await editPack(pack, async file => {
      const at = bad * RECORD + RECORD_HEADER + 36 + 1000
      const byte = Buffer.alloc(1)
      await file.read(byte, 0, 1, at)
      byte[0] = byte[0]! ^ 0xff
      await file.write(byte, 0, 1, at)
    })
    await appendFile(pack, Buffer.from('not a record'.repeat(100)))
    const store = await Blockstore.open(data)
    try {
      expect(store.recovered).toEqual({ blocks: bad - COMMITTED, bytes: (bad - COMMITTED) * SIZE })
      expect(await present(store, cids)).toEqual(cids.map((_, i) => i < bad))
      expect((await stat(pack)).size).toBe(bad * RECORD)
      // The store goes on appending where the good records end.
      const bytes = new Uint8Array(SIZE).fill(7)
      await store.put(rawCid(bytes), bytes)
      await store.commit()
      expect(new Uint8Array(await store.get(rawCid(bytes)))).toEqual(bytes)
    } finally {
      await store.close()
    }
  }, 60_000)

  it('a block twice in the tail is indexed once, at its first copy', async () => {
    const { data, cids, pack } = await killed('twice')
    await editPack(pack, async file => {
      // The last record again, after itself.
      const last = Buffer.alloc(RECORD)
      await file.read(last, 0, RECORD, (COUNT - 1) * RECORD)
      await file.write(last, 0, RECORD, COUNT * RECORD)
    })
    const store = await Blockstore.open(data)
    try {
      expect(store.recovered).toEqual({ blocks: COUNT - COMMITTED, bytes: (COUNT - COMMITTED) * SIZE })
      expect((await stat(pack)).size).toBe((COUNT + 1) * RECORD)
      const [entry] = await store.locateMany([cids[COUNT - 1]!.multihash.digest])
      expect(entry?.offset).toBe((COUNT - 1) * RECORD + RECORD_HEADER + 36)
    } finally {
      await store.close()
    }
  }, 60_000)

  it('a daemon started on the store says what it recovered, and has those blocks', async () => {
    const dataDir = join(dir, 'daemon')
    const cids = await writeAndKill(join(dataDir, 'store'))
    const daemon = spawn(process.execPath, [BIN, '--data-dir', dataDir, 'daemon', '--json', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, COLLECTIVE_BOOTSTRAP: '', COLLECTIVE_LISTEN: '' }
    })
    const exited = new Promise(resolve => daemon.on('exit', resolve))
    try {
      const events: Array<Record<string, unknown>> = []
      let stdout = ''
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`no daemon:ready: ${stdout}`)) }, 20_000)
        daemon.stdout.on('data', d => {
          stdout += d
          const lines = stdout.split('\n')
          stdout = lines.pop()!
          for (const line of lines) events.push(JSON.parse(line))
          if (events.some(e => e.type === 'daemon:ready')) { clearTimeout(timer); resolve() }
        })
      })
      expect(events.find(e => e.type === 'store:recovered')).toEqual({ type: 'store:recovered', blocks: COUNT - COMMITTED, bytes: (COUNT - COMMITTED) * SIZE })
      const fsck = await cli(['--data-dir', dataDir, 'fsck', '--json'], { timeoutMs: 30_000 })
      expect(fsck.code, fsck.stderr).toBe(0)
      expect(fsck.result.blocks).toBe(cids.length)
      expect(fsck.result.corrupt).toEqual([])
    } finally {
      daemon.kill('SIGTERM')
      await exited
    }
  }, 60_000)
})
