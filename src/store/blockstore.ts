import { mkdir, open } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import { PackFiles, PackWriter, PACK_LIMIT, type Location } from './packs.js'
import { scanTail } from './recover.js'
import { BLOCK, LOCATION_BYTES, META, blockKey, digestKey, decodeLocation, encodeLocation, keyToCid, range, textKey, writeLocation, type IndexEntry } from './keys.js'
import { blockId, digestId, verifyBlock } from '../dag/hash.js'
import { MAX_BLOCK_SIZE } from '../dag/node.js'
import { AbortError, BlockMissingError, BlockTooLargeError, HashMismatchError, StoreLockedError, fromSystemError } from '../errors.js'
import { Mutex } from '../util/mutex.js'
import type { CID } from 'multiformats/cid'
import type { Block, PutResult } from './interface.js'

type DB = Level<Uint8Array, Uint8Array>
/** Pending blocks' locations by block id (their index keys are rebuilt from the id when committed). */
type PendingMap = Map<string, IndexEntry>


/** Written blocks are committed (made durable and indexed) at least this often. */
const COMMIT_BYTES = 64 * 1024 * 1024
/** Written but not committed, at most: past it, puts wait for the commit in flight (a slow disk). */
const MAX_PENDING_BYTES = 4 * COMMIT_BYTES
/** Keys looked up per LevelDB getMany. */
const LOOKUP_BATCH = 4096
/**
 * LevelDB getMany calls in flight at once for one lookup (each runs on a libuv pool thread). One
 * after another, every batch paid a thread-pool round trip: ~1 ms on an idle host, but 50-800 ms
 * each on a host whose CPU is crowded, so a pull's first look at its 8 192 leaves took 1-2 s.
 */
const LOOKUPS_IN_FLIGHT = 4
/** Locations kept in memory (about 150 bytes each: 128k = 2 GiB of 16 KiB blocks in ~20 MiB). */
const RECENT_LOCATIONS = 128 * 1024

/**
 * Content-addressed blocks on disk: bytes in pack files, locations in LevelDB.
 *
 * Crash safety comes from ordering: records are appended to the pack, the pack is fdatasync'ed, and
 * only then are their index entries written (with the pack's new committed length, atomically, in
 * one LevelDB batch). A crash at any point leaves an index that only points at durable bytes. The
 * next open indexes the whole records past the committed length whose payloads hash to their CIDs
 * (a killed process's writes that reached the file: a pull resumes without fetching them again), and
 * cuts off what follows them.
 */
export class Blockstore {
  readonly db: DB
  readonly packs: PackFiles
  private writer!: PackWriter
  /** Written but not yet committed: readable here, invisible to other opens. */
  private pending: PendingMap = new Map()
  private pendingBytes = 0
  /** Being committed in the background (synced, then indexed); still readable from here. */
  private committing?: PendingMap
  /** The commit in flight (one at a time). */
  private inflight?: Promise<void>
  /** A commit asked for while one was in flight: it starts once that one landed. */
  private queuedCommit?: Promise<void>
  /** A background commit that failed, not yet reported to a caller. */
  private commitFailure?: Error
  /** See readGeneration. */
  private generation = 0
  /**
   * False while the index holds no block (a new store, until its first commit starts): lookups of
   * blocks there are skipped. A host's first pull looked every leaf of the image up in an empty
   * index before its first request (~0.1 s per GiB).
   */
  private indexHasBlocks = true
  /** Commits finished, landed or failed (putMany compares it). */
  private commitsLanded = 0
  /**
   * Locations of blocks committed or looked up lately, valid while readGeneration is
   * `recentGeneration`: a seeder serves the same blocks to every peer, and a host serves what it
   * just stored, without a LevelDB lookup each time. Two generations of locationCacheSize / 2: when
   * `recent` is full it becomes `older` and the previous `older` is dropped, so between half and all
   * of the last locationCacheSize are kept. (Dropping the oldest entry of one Map on every insert
   * cost ~25 µs per insert once full: V8 iterates a Map from its first slot, over every deleted one.
   * Every block a pull commits or a seeder locates comes here: a 16 GiB pull took 130 s, now 72 s.)
   */
  private recent = new Map<string, IndexEntry>()
  private older = new Map<string, IndexEntry>()
  private recentGeneration = -1
  /** Blocks (and their payload bytes) that `open` found written but not committed, and indexed (recoverTail). */
  recovered = { blocks: 0, bytes: 0 }
  /** How many locations the cache keeps at most (RECENT_LOCATIONS; tests make it small). */
  locationCacheSize = RECENT_LOCATIONS
  readonly lock = new Mutex()

  private constructor (db: DB, packs: PackFiles) {
    this.db = db
    this.packs = packs
  }

  /**
   * Opens (or creates) the store in `dir`. `directWrites` (default: on, unless the environment sets
   * COLLECTIVE_DIRECT_WRITES=0) lets appends nobody reads back soon bypass the page cache (./direct.ts).
   */
  static async open (dir: string, options: { directWrites?: boolean } = {}): Promise<Blockstore> {
    try {
      await mkdir(join(dir, 'packs'), { recursive: true })
    } catch (err) {
      throw fromSystemError(err, dir)
    }
    const db: DB = new Level(join(dir, 'index'), { keyEncoding: 'view', valueEncoding: 'view' })
    try {
      await db.open()
    } catch (err: any) {
      const cause = err?.cause ?? err
      if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(String(cause?.message))) {
        throw new StoreLockedError(`the store in ${dir} is in use by another process (is a daemon running?)`, { cause: err })
      }
      throw fromSystemError(cause, join(dir, 'index'))
    }
    const store = new Blockstore(db, new PackFiles(join(dir, 'packs')))
    store.packs.directWrites = options.directWrites ?? process.env.COLLECTIVE_DIRECT_WRITES !== '0'
    try {
      const active = await store.getMeta<number>('pack:active') ?? 1
      const committed = await store.getMeta<number>(`pack:${active}:length`) ?? 0
      const { end, ...recovered } = await store.recoverTail(active, committed)
      store.recovered = recovered
      store.writer = await PackWriter.open(store.packs, active, end)
      store.indexHasBlocks = await store.anyBlockIndexed()
    } catch (err) {
      await db.close()
      throw err
    }
    return store
  }

  /**
   * Indexes the records a process killed before its commit left past the active pack's committed
   * length, each hashed first (./recover.ts), and moves the committed length past them. The pack is
   * synced before the index names them (as a commit does). A record whose block is indexed already
   * (or came earlier in the tail) stays as dead bytes. Whatever follows the last good record is cut
   * by PackWriter.open.
   */
  private async recoverTail (pack: number, committed: number): Promise<{ blocks: number, bytes: number, end: number }> {
    const path = this.packs.path(pack)
    let scan: Awaited<ReturnType<typeof scanTail>>
    try {
      scan = await scanTail(path, committed)
    } catch (err) {
      throw fromSystemError(err, path)
    }
    if (scan.records.length === 0) return { blocks: 0, bytes: 0, end: committed }
    try {
      const file = await open(path, 'r')
      try { await file.datasync() } finally { await file.close() }
    } catch (err) {
      throw fromSystemError(err, path)
    }
    const keys = scan.records.map(r => blockKey(r.cid))
    const present = await this.getIndexMany(keys)
    const batch = this.db.batch()
    const seen = new Set<string>()
    let blocks = 0
    let bytes = 0
    scan.records.forEach(({ cid, offset, length }, i) => {
      // Indexed already, or twice in the tail (the first copy is kept; the other is dead bytes).
      const id = blockId(cid)
      if (present[i] != null || seen.has(id)) return
      seen.add(id)
      batch.put(keys[i]!, encodeLocation({ pack, offset, length, codec: cid.code }))
      blocks++
      bytes += length
    })
    batch.put(textKey(META, `pack:${pack}:length`), Buffer.from(JSON.stringify(scan.end)))
    await batch.write({ sync: true })
    return { blocks, bytes, end: scan.end }
  }

  async getMeta<T> (name: string): Promise<T | undefined> {
    const value = await this.db.get(textKey(META, name))
    return value == null ? undefined : JSON.parse(Buffer.from(value).toString('utf8')) as T
  }

  async setMeta (name: string, value: unknown): Promise<void> {
    await this.db.put(textKey(META, name), Buffer.from(JSON.stringify(value)), { sync: true })
  }

  private async lookup (cid: CID): Promise<IndexEntry | undefined> {
    const id = blockId(cid)
    const hit = this.pending.get(id) ?? this.committing?.get(id)
    if (hit != null) return hit
    if (!this.indexHasBlocks) return undefined
    const value = await this.db.get(blockKey(cid))
    return value == null ? undefined : decodeLocation(value)
  }

  async has (cid: CID): Promise<boolean> {
    return (await this.lookup(cid)) != null
  }

  /** Which of `cids` are stored (one LevelDB round trip per thousand). */
  async hasMany (cids: CID[]): Promise<boolean[]> {
    return await this.hasDigests(cids.map(cid => cid.multihash.digest))
  }

  /**
   * `hasMany` by BLAKE3 digest (a skeleton keeps its leaves as digests), and their `digestId`s if the
   * caller has them: a block not in the index may be pending, and the pending maps are keyed by id
   * (58 000 ids made here were a fifth of a 1 GiB pull's first lookup).
   */
  async hasDigests (digests: Uint8Array[], ids?: string[]): Promise<boolean[]> {
    const values = await this.getIndexMany(digests.map(digestKey))
    const out = new Array<boolean>(values.length)
    for (let i = 0; i < values.length; i++) {
      if (values[i] != null) out[i] = true
      else if (this.pending.size === 0 && this.committing == null) out[i] = false
      else {
        const id = ids?.[i] ?? digestId(digests[i]!)
        out[i] = this.pending.has(id) || this.committing?.has(id) === true
      }
    }
    return out
  }

  /**
   * `hasDigests` for a host about to serve the blocks: their locations are kept too (when they fit in
   * the location cache), so reading them next looks up no index entry again (a seeder's 58 000
   * lookups per GiB, each batch a threadpool round trip, were ~0.3 s of its event loop).
   */
  async hasManyToServe (digests: Uint8Array[]): Promise<boolean[]> {
    if (digests.length > this.locationCacheSize) return await this.hasDigests(digests)
    const locations = await this.locateMany(digests)
    // Not .map: the array has holes where nothing was found.
    return Array.from(locations, l => l != null)
  }

  /** Whether the index has an entry for any block. */
  private async anyBlockIndexed (): Promise<boolean> {
    for await (const _key of this.db.keys({ ...range(BLOCK), limit: 1 })) return true
    return false
  }

  /**
   * Index values of block keys `keys` (undefined where absent): LevelDB getMany calls of
   * LOOKUP_BATCH keys, LOOKUPS_IN_FLIGHT at a time; none while the index holds no block.
   */
  private async getIndexMany (keys: Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    const out: Array<Uint8Array | undefined> = new Array(keys.length)
    if (!this.indexHasBlocks) return out
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < keys.length) {
        const at = next
        next += LOOKUP_BATCH
        const values = await this.db.getMany(keys.slice(at, at + LOOKUP_BATCH))
        values.forEach((v, j) => { out[at + j] = v ?? undefined })
      }
    }
    const workers = Math.min(LOOKUPS_IN_FLIGHT, Math.ceil(keys.length / LOOKUP_BATCH))
    await Promise.all(Array.from({ length: workers }, worker))
    return out
  }

  /** Reads a block and checks its hash: a flipped bit on disk is an error, never wrong data. */
  async get (cid: CID, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const loc = await this.lookup(cid)
    if (loc == null) throw new BlockMissingError(`block ${cid} is not in the store`)
    await this.written([loc])
    const bytes = await this.packs.read(loc)
    if (bytes == null || !verifyBlock(cid, bytes)) {
      throw new HashMismatchError(`block ${cid} is corrupt on disk (run: collective-peer fsck)`)
    }
    return bytes
  }

  /**
   * Reads many blocks at once: one index round trip, and records that sit next to each other in a
   * pack (as the leaves of an imported image do) read with one pread. Every block is verified.
   */
  async getMany (cids: CID[], options: { signal?: AbortSignal } = {}): Promise<Uint8Array[]> {
    const locations = await this.locateMany(cids.map(cid => cid.multihash.digest))
    const missing = locations.findIndex(l => l == null)
    if (missing >= 0) throw new BlockMissingError(`block ${cids[missing]} is not in the store`)
    if (options.signal?.aborted === true) throw new AbortError()
    const blocks = await this.packs.readMany(locations as IndexEntry[])
    blocks.forEach((bytes, i) => {
      if (bytes == null || !verifyBlock(cids[i]!, bytes)) {
        throw new HashMismatchError(`block ${cids[i]} is corrupt on disk (run: collective-peer fsck)`)
      }
    })
    return blocks as Uint8Array[]
  }

  /**
   * Reads what it can of `cids`, for serving peers: one index round trip, coalesced preads, every
   * block verified. Undefined for a block not stored, or whose bytes on disk do not match its hash
   * (never wrong data; fsck reports those).
   */
  async readMany (cids: CID[]): Promise<Array<Uint8Array | undefined>> {
    const locations = await this.locateMany(cids.map(cid => cid.multihash.digest))
    const found = locations.flatMap((l, i) => l == null ? [] : [i])
    const out: Array<Uint8Array | undefined> = new Array(cids.length)
    if (found.length === 0) return out
    // What this process wrote to the active pack through the page cache and has landed is there (a
    // host of a swarm serves what it just received): read synchronously (PackFiles.readMany). Such a
    // read also sends the writer's next appends through the page cache (PackWriter.readRecent).
    const writer = this.writer
    const warm = (loc: Location): boolean => loc.pack === writer.id && writer.readRecent(loc.offset, loc.length)
    const blocks = await this.packs.readMany(found.map(i => locations[i]!), warm)
    found.forEach((i, k) => {
      const bytes = blocks[k]
      if (bytes != null && verifyBlock(cids[i]!, bytes)) out[i] = bytes
    })
    return out
  }

  /**
   * Where blocks are, by BLAKE3 digest (committed, or pending: once the write holding a pending
   * block's bytes landed, if one is in flight): one LevelDB round trip per thousand; undefined for
   * blocks not stored. A location stays valid while `readGeneration` is unchanged (readers that
   * cache locations compare it); bytes read from one are not verified here.
   */
  async locateMany (digests: Uint8Array[]): Promise<Array<IndexEntry | undefined>> {
    const locations: Array<IndexEntry | undefined> = new Array(digests.length)
    const lookups: number[] = []
    const ids: string[] = new Array(digests.length)
    for (let i = 0; i < digests.length; i++) {
      const d = digests[i]!
      const id = ids[i] = Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('latin1')
      const hit = this.pending.get(id) ?? this.committing?.get(id) ?? this.recentLocation(id)
      if (hit != null) locations[i] = hit
      else lookups.push(i)
    }
    const generation = this.readGeneration
    const values = await this.getIndexMany(lookups.map(i => digestKey(digests[i]!)))
    values.forEach((v, j) => {
      if (v == null) return
      const entry = decodeLocation(v)
      locations[lookups[j]!] = entry
      this.remember(ids[lookups[j]!]!, entry, generation)
    })
    await this.written(locations)
    return locations
  }

  /** Waits for the writes of pending blocks among `locations` that are still on their way to the active pack. */
  private async written (locations: Array<Location | undefined>): Promise<void> {
    const writer = this.writer
    let end = 0
    for (const loc of locations) if (loc != null && loc.pack === writer.id && loc.offset + loc.length > end) end = loc.offset + loc.length
    if (end > writer.landed) await writer.landedTo(end)
  }

  private recentLocation (id: string): IndexEntry | undefined {
    return this.recentGeneration === this.readGeneration ? this.recent.get(id) ?? this.older.get(id) : undefined
  }

  /** Caches a location read (or committed) while readGeneration was `generation`, if it still is. */
  private remember (id: string, entry: IndexEntry, generation: number): void {
    if (generation !== this.readGeneration) return
    if (this.recentGeneration !== generation) {
      this.recent = new Map()
      this.older = new Map()
      this.recentGeneration = generation
    }
    if (this.recent.size >= this.locationCacheSize / 2) {
      this.older = this.recent
      this.recent = new Map()
    }
    this.recent.set(id, entry)
  }

  /**
   * Changes whenever a location handed out by `locateMany` may stop holding its block: index entries
   * deleted (fsck found them corrupt, gc), a pack removed (gc), a failed write cut a pack back.
   */
  get readGeneration (): number { return this.generation + this.packs.generation }

  /**
   * Stores blocks not already present. Callers that computed the CIDs themselves pass
   * `trusted: true`; otherwise every block is hashed and a mismatch throws before anything is kept.
   * `fresh: true` says the caller found the blocks missing from the store lately (a pull): they are
   * looked for only among the blocks written by this process lately, not in the index. Should one
   * have been stored meanwhile and left that memory, it is written again: its first copy becomes
   * dead bytes for gc, never a wrong or missing block. `handOver: true` gives the blocks to the
   * store: `blocks` is emptied once they are queued for writing, and the store lets go of each as
   * soon as its bytes are copied for the write, long before the write lands and this resolves (a
   * pull's blocks held until then were promoted to V8's old space).
   */
  async putMany (blocks: Block[], options: { trusted?: boolean, fresh?: boolean, handOver?: boolean } = {}): Promise<PutResult> {
    for (const { cid, bytes } of blocks) {
      if (bytes.length > MAX_BLOCK_SIZE) throw new BlockTooLargeError(`block ${cid} has ${bytes.length} bytes (limit ${MAX_BLOCK_SIZE})`)
      if (options.trusted !== true && !verifyBlock(cid, bytes)) throw new HashMismatchError(`block bytes do not hash to ${cid}`)
    }
    const ids = blocks.map(b => b.id ?? blockId(b.cid))
    // Index keys only for a lookup in the index (a pull's blocks have none: see `fresh`).
    const keys = options.fresh === true ? [] : blocks.map(b => blockKey(b.cid))
    // A commit that failed in the background is reported here, to the next writer.
    this.throwCommitFailure()
    // The disk syncs slower than we write: wait for the commit in flight before writing more.
    while (this.pendingBytes >= MAX_PENDING_BYTES && this.inflight != null) await this.inflight.catch(() => {})
    // The index lookups start now, while the calls ahead hold the lock (they overlap their writes:
    // the importer hands each segment over without waiting); they are redone under the lock if the
    // index may have changed meanwhile (a commit landed, entries were deleted, a failed write was
    // dropped). Calls still write in call order.
    let epoch = this.indexEpoch
    const lookup = this.present(ids, keys, options.fresh === true)
    lookup.catch(() => {})
    const { result, written } = await this.lock.run(async () => {
      let present = await lookup
      while (epoch !== this.indexEpoch) {
        epoch = this.indexEpoch
        present = await this.present(ids, keys, options.fresh === true)
      }
      let stored = 0
      let bytes = 0
      for (let i = 0; i < blocks.length; i++) {
        const block = blocks[i]!
        // Appended since the lookup (by a call ahead, or earlier in this one): stored once.
        if (present[i] === true || this.pending.has(ids[i]!) || this.committing?.has(ids[i]!) === true) continue
        if (this.writer.size + block.bytes.length > PACK_LIMIT && this.writer.size > 0) await this.rotate()
        this.appendNow(block, ids[i]!)
        stored++
        bytes += block.bytes.length
      }
      // Awaited outside the lock: the next call appends and writes while this write is in flight.
      const written = this.writer.write()
      written.catch(() => {})
      // Handed over (see putMany's doc): the caller keeps none of them either.
      if (options.handOver === true) blocks.length = 0
      if (this.pendingBytes >= COMMIT_BYTES) void this.requestCommit().catch(() => {})
      // Wrapped: a promise returned as it is would hold the lock until it settles.
      return { result: { stored, bytes }, written }
    })
    await this.landed(written)
    return result
  }

  /** Waits for a write of the active pack; if it failed, cuts the pack back (see recoverWrites) and throws. */
  private async landed (written: Promise<void>): Promise<void> {
    try {
      await written
    } catch (err) {
      await this.lock.run(async () => { await this.recoverWrites() })
      throw err
    }
  }

  /**
   * After a failed write (a full disk): the pack is cut back to the writes that landed in order
   * (PackWriter.recover), and the pending entries of records past that are dropped, so no commit can
   * index bytes that do not exist. Their callers got the error.
   */
  private async recoverWrites (): Promise<void> {
    const writer = this.writer
    if (!writer.failed) return
    const length = await writer.recover()
    // Bytes a concurrent reader located past the cut may be overwritten later.
    this.generation++
    for (const [id, entry] of this.pending) {
      if (entry.pack === writer.id && entry.offset >= length) {
        this.pending.delete(id)
        this.pendingBytes -= entry.length
      }
    }
  }

  /**
   * Which blocks are stored or on their way (pending or being committed), by id and index key: one
   * LevelDB round trip per thousand blocks not pending (none when `memoryOnly`).
   */
  private async present (ids: string[], keys: Uint8Array[], memoryOnly: boolean): Promise<boolean[]> {
    const out: boolean[] = new Array(ids.length).fill(false)
    const look: number[] = []
    for (let i = 0; i < ids.length; i++) {
      if (this.pending.has(ids[i]!) || this.committing?.has(ids[i]!) === true || this.recentLocation(ids[i]!) != null) out[i] = true
      else if (!memoryOnly) look.push(i)
    }
    if (look.length === 0) return out
    const values = await this.getIndexMany(look.map(i => keys[i]!))
    values.forEach((v, j) => { if (v != null) out[look[j]!] = true })
    return out
  }

  /** Changes whenever a block's presence may have changed other than by an append (see putMany). */
  private get indexEpoch (): number { return this.readGeneration + this.commitsLanded }

  async put (cid: CID, bytes: Uint8Array, options: { trusted?: boolean } = {}): Promise<PutResult> {
    return await this.putMany([{ cid, bytes }], options)
  }

  /** Makes every block written so far durable and visible to later opens. */
  async commit (): Promise<void> {
    await this.lock.run(async () => { await this.commitLocked() })
  }

  /**
   * Makes every block written so far durable and visible to later opens, without holding up writers:
   * later puts go on writing while the disk syncs. One commit runs at a time; one asked for while
   * another is in flight starts when that one lands, and covers everything written by then.
   */
  async commitInBackground (): Promise<void> {
    // Wrapped: a promise returned as it is would hold the lock until the commit lands.
    const { job } = await this.lock.run(async () => ({ job: this.requestCommit() }))
    await job
  }

  /** A commit of everything written so far: started now if none is in flight, else once it lands. */
  private async requestCommit (): Promise<void> {
    if (this.inflight == null) {
      this.launchCommit()
      await this.inflight
      return
    }
    this.queuedCommit ??= this.inflight.catch(() => {}).then(async () => {
      const { job } = await this.lock.run(async () => {
        this.queuedCommit = undefined
        // A commitLocked meanwhile may have started one.
        await this.inflight?.catch(() => {})
        this.launchCommit()
        return { job: this.inflight }
      })
      await job
    })
    await this.queuedCommit
  }

  /**
   * Starts committing what is pending (the caller holds the lock; no commit is in flight): once its
   * records landed, fdatasync the pack, then write the index entries and the pack's committed length
   * in one synced batch. In the background: the next blocks are written while the disk syncs.
   */
  private launchCommit (): void {
    if (this.pending.size === 0) return
    const landed = this.writer.write()
    landed.catch(() => {})
    const entries = this.pending
    const length = this.writer.written
    const writer = this.writer
    this.pending = new Map()
    this.pendingBytes = 0
    this.committing = entries
    const generation = this.readGeneration
    const job: Promise<void> = (async () => {
      await landed
      await writer.datasync()
      // Before the entries are written: from here on, lookups look in the index.
      this.indexHasBlocks = true
      const batch = this.db.batch()
      // Two buffers for every entry: the batch copies each key and value as it is put. A new
      // Uint8Array per entry (two per block) cost an ArrayBuffer each on its way into LevelDB.
      const key = Buffer.allocUnsafeSlow(1 + 32)
      key[0] = BLOCK
      const value = Buffer.allocUnsafeSlow(LOCATION_BYTES)
      for (const [id, entry] of entries) {
        writeLocation(value, entry)
        if (id.length === 32) {
          key.write(id, 1, 'latin1')
          batch.put(key, value)
        } else {
          batch.put(digestKey(Buffer.from(id, 'latin1')), value)
        }
      }
      batch.put(textKey(META, `pack:${writer.id}:length`), Buffer.from(JSON.stringify(length)))
      await batch.write({ sync: true })
      for (const [id, entry] of entries) this.remember(id, entry, generation)
    })().catch(err => {
      // Its blocks are not indexed: the next put or commit reports it, whoever started this one.
      this.commitFailure ??= err
      throw err
    }).finally(() => {
      // Its blocks leave `committing`: indexed now, or not at all if the commit failed.
      this.commitsLanded++
      if (this.committing === entries) this.committing = undefined
      if (this.inflight === job) this.inflight = undefined
    })
    job.catch(() => {})
    this.inflight = job
  }

  /** Commits everything written so far and waits for it (the caller holds the lock). */
  private async commitLocked (): Promise<void> {
    await this.inflight?.catch(() => {})
    this.launchCommit()
    await this.inflight?.catch(() => {})
    if (this.writer.failed) await this.recoverWrites()
    this.throwCommitFailure()
  }

  /** Throws (once) the error of a commit that failed since it was last reported. */
  private throwCommitFailure (): void {
    const err = this.commitFailure
    if (err == null) return
    this.commitFailure = undefined
    throw err
  }

  private async appendLocked (block: Block): Promise<void> {
    if (this.writer.size + block.bytes.length > PACK_LIMIT && this.writer.size > 0) await this.rotate()
    this.appendNow(block, blockId(block.cid))
  }

  /** Queues a record in the active pack (the caller rotated it if needed) and marks it pending. */
  private appendNow (block: Block, id: string): void {
    const loc: Location = this.writer.append(block.cid.bytes, block.bytes)
    this.pending.set(id, { pack: loc.pack, offset: loc.offset, length: loc.length, codec: block.cid.code })
    this.pendingBytes += block.bytes.length
  }

  private async rotate (): Promise<void> {
    await this.commitLocked()
    await this.writer.close()
    const id = this.writer.id + 1
    this.writer = await PackWriter.open(this.packs, id, 0)
    const batch = this.db.batch()
    batch.put(textKey(META, 'pack:active'), Buffer.from(JSON.stringify(id)))
    batch.put(textKey(META, `pack:${id}:length`), Buffer.from('0'))
    await batch.write({ sync: true })
  }

  /** The id of the pack being appended to (GC never rewrites it). */
  get activePack (): number { return this.writer.id }

  /** Every committed block, in key order. */
  async * entries (): AsyncGenerator<{ cid: CID, key: Uint8Array, entry: IndexEntry }> {
    for await (const [key, value] of this.db.iterator(range(BLOCK))) {
      const entry = decodeLocation(value)
      yield { cid: keyToCid(key, entry.codec), key, entry }
    }
  }

  /** Drops index entries (the bytes stay in their pack until GC rewrites it). */
  async deleteMany (keys: Uint8Array[]): Promise<void> {
    this.generation++
    for (let i = 0; i < keys.length; i += 10_000) {
      await this.db.batch(keys.slice(i, i + 10_000).map(key => ({ type: 'del' as const, key })), { sync: true })
    }
    // Again: a lookup made while the batches ran may have seen entries that are gone now.
    this.generation++
  }

  /** Moves committed blocks to the active pack (GC compaction); durable before returning. */
  async relocate (blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> {
    await this.lock.run(async () => {
      for (const block of blocks) await this.appendLocked(block)
      await this.commitLocked()
    })
  }

  async close (): Promise<void> {
    try {
      await this.commit()
    } finally {
      await this.writer.close().catch(() => {})
      await this.packs.close()
      await this.db.close()
    }
  }
}
