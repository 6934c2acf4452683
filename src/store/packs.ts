import { readv as readvCallback, readvSync, writeSync, writevSync } from 'node:fs'
import { open, readdir, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { fromSystemError } from '../errors.js'
import { DirectWrites, stagingBuffers } from './direct.js'

/**
 * Block bytes live in append-only pack files (LevelDB rewrites large values on every compaction:
 * 41 MiB/s at 6 GiB of 64 KiB values, ../shared/facts.md). A record is
 *   u32be payloadLength | u8 cidLength | cid bytes | payload
 * so a pack can be re-read on its own (fsck). The index stores where each payload starts.
 */
export const RECORD_HEADER = 5
/** A pack is closed and a new one started past this size; GC rewrites packs one at a time. */
export const PACK_LIMIT = 256 * 1024 * 1024
/** readMany: records at most this far apart are read together (a record header is ~40 bytes). */
const COALESCE_GAP = 4096
/** readMany: the most one coalesced pread reads. */
const COALESCE_MAX = 8 * 1024 * 1024

/**
 * Synchronous reads (`readvNow`, for bytes almost surely in the page cache) copy at most this much
 * at once on the event loop; larger reads go to the threadpool all the same.
 */
export const SYNC_RUN_MAX = 1024 * 1024
/**
 * A batch of synchronous reads that took this long (ms) means the page cache had dropped the
 * bytes, or the machine is swapping: none for SYNC_BACKOFF_MS then (the event loop must not wait
 * on disks).
 */
const SLOW_SYNC_READ_MS = 50
const SYNC_BACKOFF_MS = 10_000

/**
 * PackWriter: a synchronous write that took this long (ms) means the kernel made us wait for the
 * disk (dirty-page throttling, a slow device): writes go through the threadpool for
 * SYNC_BACKOFF_MS then. Otherwise a write only copies into the page cache.
 */
const SLOW_SYNC_WRITE_MS = 20

/**
 * PackWriter: after a read of bytes this process appended (a peer asking for blocks it just got),
 * appends go through the page cache for this long (ms), so that the next ones are served from it.
 * Otherwise they are written direct (./direct.ts).
 */
const HOT_MS = 30_000

/** PackWriter: ranges of the pack written direct that it keeps apart; older ones are merged. */
const COLD_RANGES = 64

/** PackWriter: record headers are cut from chunks of this size. */
const HEADER_CHUNK = 64 * 1024

export interface Location {
  pack: number
  offset: number
  length: number
}

/** A pack open for raw reads: its fd and how many reads are in flight on it. */
interface OpenPack {
  fd: number
  reads: number
  idle?: () => void
}

export function packName (id: number): string {
  return `${String(id).padStart(8, '0')}.pack`
}

/** readv: buffers per preadv call (Linux IOV_MAX). */
const IOV_MAX = 1024

export class PackFiles {
  readonly dir: string
  /** Open promises, not handles: concurrent first reads of a pack share one open (no leaked fd). */
  private readonly readers = new Map<number, Promise<FileHandle>>()
  /**
   * The same packs once open, for `readv`'s raw-fd reads (a callback, no promise machinery per read).
   * Raw reads in flight are counted: a pack's fd is closed only once none is (a read never sees the
   * bytes of another file that reused the fd number).
   */
  private readonly opened = new Map<number, OpenPack>()
  /**
   * Bumped (before anything is closed or unlinked) each time a pack is removed: locations handed out
   * earlier may then name a pack that is gone. Caches of locations compare it (Blockstore.readGeneration).
   */
  generation = 0
  /** No synchronous reads before this (performance.now()); see SLOW_SYNC_READ_MS. */
  private syncAfter = 0
  /** Whether appends may be written direct (./direct.ts); Blockstore.open sets it. */
  directWrites = true
  /** The staging buffers of direct writes (null: the file system takes none), probed on first use. */
  private staging?: [Buffer, Buffer] | null

  constructor (dir: string) {
    this.dir = dir
  }

  /**
   * The staging buffers of direct writes, or undefined when they are off or the file system takes
   * none. One pack is appended to at a time, so its writer has them to itself.
   */
  stagingBuffers (): [Buffer, Buffer] | undefined {
    if (!this.directWrites) return undefined
    if (this.staging === undefined) this.staging = stagingBuffers(this.dir) ?? null
    return this.staging ?? undefined
  }

  path (id: number): string {
    return join(this.dir, packName(id))
  }

  async ids (): Promise<number[]> {
    const names = await readdir(this.dir)
    return names.filter(n => /^\d{8}\.pack$/.test(n)).map(n => Number(n.slice(0, 8))).sort((a, b) => a - b)
  }

  private async reader (id: number): Promise<FileHandle> {
    let fd = this.readers.get(id)
    if (fd == null) {
      const opening = open(this.path(id), 'r')
      fd = opening.then(handle => {
        // Not if the pack was removed while it opened (remove closes this handle).
        if (this.readers.get(id) === fd) this.opened.set(id, { fd: handle.fd, reads: 0 })
        return handle
      })
      this.readers.set(id, fd)
      fd.catch(() => { this.readers.delete(id) })
    }
    return await fd
  }

  /** Waits until no raw read of `pack` is in flight, and forgets its fd for them. */
  private async retire (id: number): Promise<void> {
    const pack = this.opened.get(id)
    this.opened.delete(id)
    if (pack != null && pack.reads > 0) await new Promise<void>(resolve => { pack.idle = resolve })
  }

  /**
   * Reads a payload; a short read (a pack cut short under the index) is reported as such. The
   * buffer is not zeroed first (every byte is read into it, or it is dropped), and the read is a
   * raw-fd callback (`readv`), not a FileHandle promise: a seeder reads everything it serves here.
   */
  async read (loc: Location): Promise<Uint8Array | undefined> {
    if (!this.opened.has(loc.pack)) await this.reader(loc.pack)
    const buf = Buffer.allocUnsafeSlow(loc.length)
    const n = await this.readv(loc.pack, loc.offset, [buf])
    return n === loc.length ? buf : undefined
  }

  /** Whether synchronous reads may run now (not within SYNC_BACKOFF_MS of a slow batch). */
  get syncReads (): boolean {
    return this.syncAfter === 0 || performance.now() >= this.syncAfter
  }

  /** Reports a batch of synchronous reads begun at `started` (performance.now()); a slow one stops them for a while. */
  syncReadsTook (started: number): void {
    const done = performance.now()
    this.syncAfter = done - started > SLOW_SYNC_READ_MS ? done + SYNC_BACKOFF_MS : 0
  }

  /**
   * Reads many payloads; those within COALESCE_GAP of each other in the same pack are read with one
   * pread (their record headers are read and skipped). Undefined where a pack was cut short.
   *
   * Spans for which `warm` is true (bytes this process wrote lately: in the page cache) and of at
   * most SYNC_RUN_MAX are read at once with a synchronous preadv, as the NBD export reads warm leaves:
   * a seeder re-serving what it just received made a threadpool round trip per block (futex wake-ups
   * and context switches in two threads, per 16 KiB). Everything else goes to the threadpool.
   */
  async readMany (locations: Location[], warm?: (loc: Location) => boolean): Promise<Array<Uint8Array | undefined>> {
    const out: Array<Uint8Array | undefined> = new Array(locations.length)
    const order = locations.map((_, i) => i).sort((a, b) => {
      const x = locations[a]!
      const y = locations[b]!
      return x.pack - y.pack || x.offset - y.offset
    })
    const reads: Array<Promise<void>> = []
    let syncStarted: number | undefined
    const readNow = (span: Location): Uint8Array | undefined => {
      if (syncStarted === undefined) {
        if (!this.syncReads) return undefined
        syncStarted = performance.now()
      }
      const buf = Buffer.allocUnsafeSlow(span.length)
      return this.readvNow(span.pack, span.offset, [buf]) === span.length ? buf : undefined
    }
    for (let i = 0; i < order.length;) {
      const first = locations[order[i]!]!
      let end = first.offset + first.length
      let j = i + 1
      while (j < order.length) {
        const next = locations[order[j]!]!
        if (next.pack !== first.pack || next.offset - end > COALESCE_GAP || next.offset + next.length - first.offset > COALESCE_MAX) break
        end = Math.max(end, next.offset + next.length)
        j++
      }
      const members = order.slice(i, j)
      const span = { pack: first.pack, offset: first.offset, length: end - first.offset }
      const place = (bytes: Uint8Array | undefined): void => {
        for (const k of members) {
          const loc = locations[k]!
          out[k] = bytes?.subarray(loc.offset - first.offset, loc.offset - first.offset + loc.length)
        }
      }
      const now = warm != null && span.length <= SYNC_RUN_MAX && warm(span) ? readNow(span) : undefined
      if (now != null) place(now)
      else reads.push(this.read(span).then(place))
      i = j
    }
    if (syncStarted !== undefined) this.syncReadsTook(syncStarted)
    await Promise.all(reads)
    return out
  }

  /**
   * Reads `buffers` back to back from `position` in pack `id` with as few preadv calls as possible
   * (the caller points them straight at their destination: no copy). Resolves with the bytes read,
   * short only where the pack ends. A pack removed meanwhile fails the read (its handle is closed
   * only once reads in flight are done, so a read never sees another file's bytes).
   */
  async readv (id: number, position: number, buffers: Uint8Array[]): Promise<number> {
    const pack = this.opened.get(id)
    if (pack == null || buffers.length > IOV_MAX) return await this.readvLoop(id, position, buffers)
    let total = 0
    for (const b of buffers) total += b.length
    pack.reads++
    const n = await new Promise<number>((resolve, reject) => {
      readvCallback(pack.fd, buffers, position, (err, bytesRead) => {
        if (--pack.reads === 0) pack.idle?.()
        if (err != null) reject(err)
        else resolve(bytesRead)
      })
    })
    if (n === total || n === 0) return n
    // A short read (rare: a signal, or the end of the pack): the rest the careful way.
    let skip = n
    let first = 0
    while (skip >= buffers[first]!.length) skip -= buffers[first++]!.length
    const rest = [buffers[first]!.subarray(skip), ...buffers.slice(first + 1)]
    return n + await this.readvLoop(id, position + n, rest)
  }

  /**
   * `readv` done now, blocking (for bytes the caller expects in the page cache). Undefined when the
   * pack is not open yet; may be short (then use `readv`).
   */
  readvNow (id: number, position: number, buffers: Uint8Array[]): number | undefined {
    const pack = this.opened.get(id)
    if (pack == null || buffers.length > IOV_MAX) return undefined
    return readvSync(pack.fd, buffers, position)
  }

  private async readvLoop (id: number, position: number, buffers: Uint8Array[]): Promise<number> {
    const fd = await this.reader(id)
    let total = 0
    for (const b of buffers) total += b.length
    let done = 0
    let first = 0
    let skip = 0
    while (done < total) {
      const part: Uint8Array[] = []
      for (let i = first; i < buffers.length && part.length < IOV_MAX; i++) {
        const b = buffers[i]!
        part.push(i === first && skip > 0 ? b.subarray(skip) : b)
      }
      const { bytesRead } = await fd.readv(part, position + done)
      if (bytesRead === 0) break
      done += bytesRead
      // Find where the next call starts (a short read, or more than IOV_MAX buffers).
      let left = bytesRead + skip
      while (first < buffers.length && left >= buffers[first]!.length) { left -= buffers[first]!.length; first++ }
      skip = left
    }
    return done
  }

  async remove (id: number): Promise<void> {
    this.generation++
    const fd = this.readers.get(id)
    this.readers.delete(id)
    await this.retire(id)
    await fd?.then(async f => { await f.close() }, () => {})
    await unlink(this.path(id)).catch(() => {})
  }

  async close (): Promise<void> {
    for (const id of [...this.opened.keys()]) await this.retire(id)
    for (const fd of this.readers.values()) await fd.then(async f => { await f.close() }).catch(() => {})
    this.readers.clear()
  }
}

/**
 * Appends records to the active pack. Nothing it writes is visible through the index until the
 * store commits (after `datasync`), so bytes past the committed length are garbage to be overwritten:
 * on open the pack is cut back to the committed length.
 *
 * Writes are pipelined: `write` hands the queued records to the kernel at their position and
 * returns at once, so the next records can be written while these are in flight (one write at a
 * time made a pull wait a round trip through the thread pool and the event loop per 256 KiB: 0.8 ms
 * each, most of a 1 GiB pull's time). A write's promise settles in order: it resolves once it and
 * every earlier write landed. After a failure every later write fails too until `recover` cuts the
 * pack back to the end of the writes that landed.
 */
export class PackWriter {
  readonly id: number
  private readonly fd: FileHandle
  private readonly files: PackFiles
  /** Direct writes of this pack (opened by the first write that goes direct; null: not possible here). */
  private direct?: DirectWrites | null
  /** Whether the last write went direct, and what writes of the other kind wait for (see writeAt). */
  private lastDirect = false
  private gate?: Promise<unknown>
  /** Appends go through the page cache until then (performance.now(); see HOT_MS). */
  private hotUntil = 0
  /** [start, end) pairs, in order, of the bytes this process wrote direct (not in the page cache). */
  private cold: number[] = []
  /** Where the next write goes: the end of every record handed to a write. */
  private length: number
  /** The end of the writes that landed, in order (where a failed pack is cut back to). */
  private landedLength: number
  private queue: Uint8Array[] = []
  private queued = 0
  private headers = new Uint8Array(0)
  private headersUsed = 0
  /** Settles when every write issued so far has landed (rejects if one failed). */
  private tail: Promise<void> = Promise.resolve()
  /** Resolves when every write issued so far is over, landed or not. */
  private settled: Promise<unknown> = Promise.resolve()
  private failure?: Error
  /** No synchronous writes before this (performance.now()); see SLOW_SYNC_WRITE_MS. */
  private syncAfter = 0
  /** A synchronous write slower than this (ms) sends writes to the threadpool for a while. */
  slowWriteMs = SLOW_SYNC_WRITE_MS

  private constructor (files: PackFiles, id: number, fd: FileHandle, length: number) {
    this.files = files
    this.id = id
    this.fd = fd
    this.length = length
    this.landedLength = length
    this.writtenFrom = length
  }

  /** Where this process started writing the pack: bytes from here to `landed` are its own writes (in the page cache). */
  readonly writtenFrom: number

  /** The end of the writes that landed, in order. */
  get landed (): number { return this.landedLength }

  /**
   * Resolves once the bytes up to `end` landed, if a write issued already holds them (a direct write
   * is in flight for a few ms): a reader of a block just put waits for it instead of reading a pack
   * that does not hold it yet. Returns at once for bytes not handed to a write, and after a failure.
   */
  async landedTo (end: number): Promise<void> {
    while (end > this.landedLength && end <= this.length && this.failure == null) await this.tail.catch(() => {})
  }

  static async open (files: PackFiles, id: number, committedLength: number): Promise<PackWriter> {
    try {
      const fd = await open(files.path(id), 'a+')
      await fd.truncate(committedLength)
      return new PackWriter(files, id, await reopenForWrite(fd, files.path(id)), committedLength)
    } catch (err) {
      throw fromSystemError(err, files.path(id))
    }
  }

  /** Bytes in the pack including queued records. */
  get size (): number { return this.length + this.queued }

  /** Queues a record and returns where its payload will be. */
  append (cidBytes: Uint8Array, payload: Uint8Array): Location {
    // Headers are cut from a shared chunk (one allocation per ~1500 records, not one each); a chunk
    // is never reused, so a queued header stays intact until written.
    const headerLength = RECORD_HEADER + cidBytes.length
    if (this.headers.length - this.headersUsed < headerLength) {
      this.headers = new Uint8Array(Math.max(HEADER_CHUNK, headerLength))
      this.headersUsed = 0
    }
    const header = this.headers.subarray(this.headersUsed, this.headersUsed + headerLength)
    this.headersUsed += headerLength
    const n = payload.length
    header[0] = n >>> 24
    header[1] = (n >>> 16) & 0xff
    header[2] = (n >>> 8) & 0xff
    header[3] = n & 0xff
    header[4] = cidBytes.length
    header.set(cidBytes, RECORD_HEADER)
    const offset = this.size + header.length
    this.queue.push(header, payload)
    this.queued += header.length + payload.length
    return { pack: this.id, offset, length: payload.length }
  }

  /**
   * Starts writing the queued records (not yet durable). Resolves once they and every earlier write
   * landed; rejects if any failed (then every write fails until `recover`).
   */
  write (): Promise<void> {
    if (this.failure != null) {
      this.queue = []
      this.queued = 0
      return Promise.reject(this.failure)
    }
    if (this.queue.length === 0) return this.tail
    const queue = this.queue
    const position = this.length
    const end = position + this.queued
    this.queue = []
    this.queued = 0
    this.length = end
    const done = this.writeAt(queue, position)
    this.settled = Promise.allSettled([this.settled, done])
    const tail = Promise.all([this.tail, done]).then(() => {
      this.landedLength = end
    }, err => {
      this.failure ??= fromSystemError(err, 'writing a block pack') as Error
      throw this.failure
    })
    tail.catch(() => {})
    this.tail = tail
    return tail
  }

  /**
   * Writes `queue` at `position`. Synchronously while that is fast (a write into the page cache): a
   * pull writes ~4 000 batches per GiB, and each async writev cost its main thread a round trip
   * through the threadpool (a queue lock, a worker's wake-up competing for the same cores: 0.5 s of
   * a 1 GiB pull's main thread, `--cpu-prof`). A slow one (SLOW_SYNC_WRITE_MS) sends the writes
   * of the next SYNC_BACKOFF_MS to the threadpool: the event loop must not wait on the disk.
   */
  /** Whether the next write is synchronous (no slow one lately). */
  get syncWrites (): boolean { return performance.now() >= this.syncAfter }

  /**
   * Whether the next write goes direct: no read of what this process appended within HOT_MS, and
   * the file system takes direct writes.
   */
  get directNext (): boolean {
    if (performance.now() < this.hotUntil || this.direct === null || !this.files.directWrites) return false
    if (this.direct === undefined) {
      const buffers = this.files.stagingBuffers()
      try {
        this.direct = buffers == null ? null : new DirectWrites(this.files.path(this.id), this.fd.fd, buffers)
      } catch {
        this.direct = null
      }
    }
    return this.direct?.direct === true
  }

  /**
   * A read of `length` bytes at `offset` of this pack, to serve them: true when they are in the page
   * cache (this process wrote them through it, and they landed). A read of bytes this process
   * appended says more are wanted soon: appends go through the page cache for HOT_MS.
   */
  readRecent (offset: number, length: number): boolean {
    if (offset < this.writtenFrom) return false
    this.hotUntil = performance.now() + HOT_MS
    return offset + length <= this.landedLength && !this.isCold(offset, offset + length)
  }

  private isCold (start: number, end: number): boolean {
    for (let i = this.cold.length - 2; i >= 0; i -= 2) {
      if (this.cold[i + 1]! <= start) return false
      if (this.cold[i]! < end) return true
    }
    return false
  }

  private markCold (start: number, end: number): void {
    const n = this.cold.length
    if (n > 0 && this.cold[n - 1] === start) this.cold[n - 1] = end
    else this.cold.push(start, end)
    // Many switches: the oldest two ranges become one (the bytes between are then read on the threadpool).
    if (this.cold.length > 2 * COLD_RANGES) this.cold.splice(1, 2)
  }

  private async writeAt (queue: Uint8Array[], position: number): Promise<void> {
    const direct = this.directNext
    if (direct !== this.lastDirect) {
      // A direct write rewrites the unit it starts in, and pads the one it ends in: writes of the
      // other kind next to it must not be in flight at the same time. Every write before the switch
      // lands first (writes after it wait here in call order).
      this.lastDirect = direct
      const gate: Promise<unknown> = this.settled.then(() => { if (this.gate === gate) this.gate = undefined })
      this.gate = gate
    }
    if (this.gate != null) await this.gate
    if (direct) {
      let end = position
      for (const b of queue) end += b.length
      this.markCold(position, end)
      await this.direct!.write(queue, position)
      return
    }
    if (this.syncWrites) {
      const started = performance.now()
      this.writeNow(queue, position)
      const done = performance.now()
      if (done - started > this.slowWriteMs) this.syncAfter = done + SYNC_BACKOFF_MS
      return
    }
    // writev takes at most IOV_MAX (1024) buffers per call.
    for (let i = 0; i < queue.length; i += IOV_MAX) {
      const part = queue.slice(i, i + IOV_MAX)
      const want = part.reduce((n, b) => n + b.length, 0)
      let { bytesWritten } = await this.fd.writev(part, position)
      if (bytesWritten < want) bytesWritten += await this.writeRest(part, bytesWritten, position)
      position += bytesWritten
    }
  }

  /** `writeAt` on the event loop: every byte of `queue` written (or a thrown error). */
  private writeNow (queue: Uint8Array[], position: number): void {
    for (let i = 0; i < queue.length; i += IOV_MAX) {
      const part = i === 0 && queue.length <= IOV_MAX ? queue : queue.slice(i, i + IOV_MAX)
      let want = 0
      for (const b of part) want += b.length
      const written = writevSync(this.fd.fd, part, position)
      if (written < want) {
        // Short (rare: a signal, a full disk on the way): the rest from a copy, until it fails.
        const rest = Buffer.concat(part).subarray(written)
        for (let done = 0; done < rest.length;) done += writeSync(this.fd.fd, rest, done, rest.length - done, position + written + done)
      }
      position += want
    }
  }

  private async writeRest (part: Uint8Array[], skip: number, position: number): Promise<number> {
    const rest = Buffer.concat(part).subarray(skip)
    let done = 0
    while (done < rest.length) {
      const { bytesWritten } = await this.fd.write(rest, done, rest.length - done, position + skip + done)
      done += bytesWritten
    }
    return done
  }

  /** Bytes handed to writes (queued records excluded); all in the file once the last write's promise resolves. */
  get written (): number { return this.length }

  get failed (): boolean { return this.failure != null }

  /**
   * After a failed write: waits for the writes in flight, cuts the pack back to the end of those
   * that landed in order, and accepts writes again from there. Returns that length: records at or
   * past it are gone.
   */
  async recover (): Promise<number> {
    await this.settled
    this.queue = []
    this.queued = 0
    if (this.failure == null) return this.length
    await this.fd.truncate(this.landedLength).catch(() => {})
    this.direct?.reset()
    this.length = this.landedLength
    this.failure = undefined
    this.tail = Promise.resolve()
    return this.length
  }

  /** Makes everything that landed so far durable (may run while more is written). */
  async datasync (): Promise<void> {
    try {
      await this.fd.datasync()
    } catch (err) {
      throw fromSystemError(err, 'syncing a block pack')
    }
  }

  async close (): Promise<void> {
    await this.settled
    if (this.direct != null) {
      // Direct writes end on a unit boundary: the padding after the last record goes (an open would cut it).
      if (this.failure == null && this.cold.length > 0) await this.fd.truncate(this.landedLength).catch(() => {})
      this.direct.close()
    }
    await this.fd.close()
  }
}

/** `a+` ignores positions on Linux writes; reopen read-write to write at explicit offsets. */
async function reopenForWrite (fd: FileHandle, path: string): Promise<FileHandle> {
  await fd.close()
  return await open(path, 'r+')
}
