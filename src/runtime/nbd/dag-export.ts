import { blake3 as nativeBlake3 } from '@napi-rs/blake-hash'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { DiskReader } from '../../dag/reader.js'
import { decodeNode, type Link } from '../../dag/node.js'
import { BLAKE3_CODE, RAW_CODE } from '../../dag/hash.js'
import { Blockstore } from '../../store/blockstore.js'
import { SYNC_RUN_MAX } from '../../store/packs.js'
import { AbortError, HashMismatchError } from '../../errors.js'
import type { ExportBlocks } from '../disk-exports.js'
import type { NbdExport, NbdExtent } from '../interface.js'

/** Extents returned per BLOCK_STATUS (the client asks again for the rest). */
const MAX_EXTENTS = 8192
/** BLOCK_STATUS walks this much of the disk at a time (nodes load per window, not per request). */
const EXTENTS_WINDOW = 256 * 1024 * 1024
/** Decoded nodes kept per export (level-1 nodes hold ~128 leaves: ~7 KiB each with their locations). */
const CACHE_NODES = 4096
/** Leaves fetched at once through the generic path (blocks not in the store: lazy boot). */
const FETCH_BATCH = 256
/** Records at most this far apart in a pack are read with one preadv (a record header is ~41 bytes). */
const COALESCE_GAP = 4096
/** The most one preadv reads. */
const COALESCE_MAX = 8 * 1024 * 1024
/** A read retried because the store moved blocks under it (gc, fsck) is retried at most this often. */
const RETRIES = 3
/**
 * Leaves this export verified before, in a level-1 node it read within RECENT_MS, are read (in runs
 * of up to SYNC_RUN_MAX) with a synchronous preadv on the event loop: they are almost surely in the
 * page cache, and a 256 KiB copy (~25 µs) costs less than the handoff to libuv's threadpool and back
 * (futex wake-ups and context switches: a fifth of the CPU time of a sequential read; random 4 KiB
 * reads went from 0.7x to 1.5x qemu-nbd's rate). Other reads, which may wait for the disk, go to the
 * threadpool, and so does everything for a while after synchronous reads were slow (the page cache
 * had dropped them, or the machine is swapping; `PackFiles.syncReads`, shared with the store's
 * serving reads): the event loop must not wait on disks.
 */
const RECENT_MS = 30_000
/** Where the record headers between coalesced leaves are read to (never looked at). */
const JUNK = Buffer.allocUnsafe(COALESCE_GAP)
const junkViews: Buffer[] = []
/** A view of `gap` junk bytes (the same few sizes over and over: record headers are ~41 bytes). */
function junk (gap: number): Buffer {
  return junkViews[gap] ??= JUNK.subarray(0, gap)
}
const DIGEST = 32

/**
 * One decoded node of the disk tree, kept with what reads need in flat arrays: each link's absolute
 * end offset; for nodes above the leaves their children (loaded on demand); for level-1 nodes each
 * leaf's digest, its place in the store's packs and whether its bytes were verified by this process.
 */
class TreeNode {
  readonly level: number
  readonly base: number
  readonly count: number
  readonly ends: Float64Array
  readonly parent: TreeNode | undefined
  readonly slot: number
  /** Level > 1: child CIDs (null: a hole) and children once loaded. */
  readonly childCids: Array<CID | null> | undefined
  readonly children: Array<TreeNode | Promise<TreeNode> | undefined> | undefined
  /** Level 1: leaf digests (32 bytes each) and which links are holes. */
  readonly digests: Uint8Array | undefined
  readonly holes: Uint8Array | undefined
  /** Level 1: pack (-1: not located, or not in the store) and payload position of each leaf. */
  readonly packs: Int32Array | undefined
  readonly positions: Float64Array | undefined
  /** Level 1: 1 once the bytes at the leaf's location hashed to its digest (this store generation). */
  readonly verified: Uint8Array | undefined
  /** The store generation the locations belong to (-1: never located). */
  generation = -1
  /** Leaves were stored since the node was located (fetched on demand): locate them again. */
  stale = false
  /** When a read last used this node (performance.now()); -Infinity: never. */
  readAt = -Infinity
  locating: Promise<void> | undefined

  constructor (level: number, base: number, links: Link[], parent: TreeNode | undefined, slot: number) {
    this.level = level
    this.base = base
    this.count = links.length
    this.parent = parent
    this.slot = slot
    this.ends = new Float64Array(links.length)
    let pos = base
    for (let i = 0; i < links.length; i++) { pos += links[i]![1]; this.ends[i] = pos }
    if (level > 1) {
      this.childCids = links.map(l => l[0])
      this.children = new Array(links.length)
    } else {
      this.digests = new Uint8Array(links.length * DIGEST)
      this.holes = new Uint8Array(links.length)
      links.forEach(([cid], i) => {
        if (cid == null) this.holes![i] = 1
        else this.digests!.set(cid.multihash.digest, i * DIGEST)
      })
      this.packs = new Int32Array(links.length).fill(-1)
      this.positions = new Float64Array(links.length)
      this.verified = new Uint8Array(links.length)
    }
  }

  start (i: number): number { return i === 0 ? this.base : this.ends[i - 1]! }

  /** The first link that ends after `offset`. */
  first (offset: number): number {
    let lo = 0
    let hi = this.count - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.ends[mid]! > offset) hi = mid
      else lo = mid + 1
    }
    return lo
  }

  digest (i: number): Uint8Array { return this.digests!.subarray(i * DIGEST, (i + 1) * DIGEST) }

  leafCid (i: number): CID { return CID.createV1(RAW_CODE, Digest.create(BLAKE3_CODE, this.digest(i))) }
}

/** One preadv: pack bytes from `position` into `buffers` (destination slices and junk for headers). */
interface Run { pack: number, position: number, end: number, buffers: Uint8Array[], cold: boolean }
/** A leaf read whole but not yet verified; `to` (a slice of the reply) gets [from, from + length) of it. */
interface Check { node: TreeNode, i: number, bytes: Uint8Array, to?: Uint8Array, from?: number }
/** A leaf the store lacks (or could not place): read through the generic path. */
interface Fetch { node: TreeNode, i: number, from: number, to: Uint8Array }
/** How one read gets its bytes (DagExport.plan). */
interface Plan { runs: Run[], checks: Check[] | undefined, fetches: Fetch[] | undefined, now: number, generation: number }

/**
 * A disk DAG served read-only: offsets map to leaves through a cache of decoded nodes, holes read as
 * zeros and report as holes in BLOCK_STATUS. Publisher disks are never written: writes go to the
 * VM's copy-on-write layer above this export.
 *
 * Reads from the local store skip the block API: each leaf's pack location is looked up once per
 * level-1 node (one index round trip for ~128 leaves) and kept, and a request's leaves are read with
 * as few preadv calls as possible straight into the reply buffer. Every leaf is verified (BLAKE3)
 * the first time this export reads it from its location; a leaf already verified there is served
 * without hashing again as long as the store generation is unchanged (gc or fsck moving or dropping
 * blocks forgets every location and verification).
 */
export class DagExport implements NbdExport {
  readonly readOnly = true
  readonly multiConn = true
  readonly description: string
  private readonly reader: DiskReader
  private readonly blocks: ExportBlocks
  private readonly store: Blockstore | undefined
  private readonly tree: TreeNode
  /** Nodes below the root, least recently used first. */
  private readonly lru = new Map<TreeNode, undefined>()

  private constructor (reader: DiskReader, blocks: ExportBlocks) {
    this.reader = reader
    this.blocks = blocks
    this.store = localStore(blocks)
    this.tree = new TreeNode(reader.root.height, 0, reader.root.links, undefined, 0)
    this.description = `collective-peer disk ${reader.cid.toString()}`
  }

  static async open (root: CID, blocks: ExportBlocks, options: { signal?: AbortSignal } = {}): Promise<DagExport> {
    return new DagExport(await DiskReader.open(root, blocks, options), blocks)
  }

  get root (): CID { return this.reader.cid }
  get size (): number { return this.reader.size }

  async read (offset: number, length: number, options: { signal?: AbortSignal, into?: Uint8Array } = {}): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.size)
    // Not zero-filled up front: every byte is either a leaf's (read into place) or a hole's (filled).
    const out = options.into?.length === end - offset ? options.into : Buffer.allocUnsafe(Math.max(0, end - offset))
    if (offset >= end) return out
    for (let attempt = 1; ; attempt++) {
      const generation = this.store?.readGeneration ?? 0
      try {
        // Usually every node is cached and located, and every leaf warm: then nothing here waits.
        const nodes = this.cachedLeafNodes(offset, end, out)
        const plan = nodes != null && this.located(nodes) ? this.plan(nodes, out, offset, end) : await this.prepare(out, offset, end, options.signal)
        if (!this.readWarm(plan)) await this.finish(plan, options.signal)
        return out
      } catch (err) {
        // gc or fsck moved blocks while we read: the locations we used may be gone. Look again.
        if (attempt >= RETRIES || this.store == null || this.store.readGeneration === generation) throw err
      }
    }
  }

  /** Whether every node's leaf locations are current (or there is no store to locate them in). */
  private located (nodes: TreeNode[]): boolean {
    if (this.store == null) return true
    const generation = this.store.readGeneration
    for (const node of nodes) if (node.generation !== generation || node.stale) return false
    return true
  }

  /** The slow way to a plan: load the nodes missing from the cache, locate their leaves. */
  private async prepare (out: Uint8Array, start: number, end: number, signal?: AbortSignal): Promise<Plan> {
    const nodes = await this.leafNodes(start, end, out, signal)
    const store = this.store
    if (store != null) {
      const generation = store.readGeneration
      const locating: Array<Promise<void>> = []
      for (const node of nodes) if (node.generation !== generation || node.stale) locating.push(this.locate(node, store))
      await Promise.all(locating)
      if (signal?.aborted === true) throw new AbortError()
    }
    return this.plan(nodes, out, start, end)
  }

  /**
   * Where each byte of [start, end) comes from: holes are zero-filled now; leaves in the store become
   * runs of adjacent pack records (one preadv each, straight into `out`; a leaf not verified yet is
   * read whole and checked, aside if only part of it is wanted); the others are fetched.
   */
  private plan (nodes: TreeNode[], out: Uint8Array, start: number, end: number): Plan {
    const store = this.store
    const generation = store?.readGeneration ?? 0
    const plan: Plan = { runs: [], checks: undefined, fetches: undefined, now: performance.now(), generation }
    let run: Run | undefined
    for (const node of nodes) {
      const current = node.generation === generation
      const recent = plan.now - node.readAt < RECENT_MS
      node.readAt = plan.now
      for (let i = node.first(start); i < node.count; i++) {
        const leafStart = node.start(i)
        if (leafStart >= end) break
        const leafEnd = node.ends[i]!
        const from = Math.max(start, leafStart)
        const to = Math.min(end, leafEnd)
        const dest = out.subarray(from - start, to - start)
        if (node.holes![i] === 1) { dest.fill(0); continue }
        const pack = node.packs![i]!
        if (store == null || pack < 0 || !current) {
          (plan.fetches ??= []).push({ node, i, from: from - leafStart, to: dest })
          continue
        }
        let position = node.positions![i]!
        let buffer: Uint8Array
        const verified = node.verified![i] === 1
        const warm = verified && recent
        if (verified) {
          position += from - leafStart
          buffer = dest
        } else if (from === leafStart && to === leafEnd) {
          buffer = dest
          ;(plan.checks ??= []).push({ node, i, bytes: dest })
        } else {
          // Verifying needs the whole leaf: read it aside, copy the part asked for once it checks out.
          buffer = Buffer.allocUnsafe(leafEnd - leafStart)
          ;(plan.checks ??= []).push({ node, i, bytes: buffer, to: dest, from: from - leafStart })
        }
        const gap = position - (run?.end ?? 0)
        if (run != null && run.pack === pack && gap >= 0 && gap <= COALESCE_GAP &&
          position + buffer.length - run.position <= COALESCE_MAX && run.buffers.length < 1000) {
          if (gap > 0) run.buffers.push(junk(gap))
          run.buffers.push(buffer)
          run.end = position + buffer.length
          if (!warm) run.cold = true
        } else {
          run = { pack, position, end: position + buffer.length, buffers: [buffer], cold: !warm }
          plan.runs.push(run)
        }
      }
    }
    return plan
  }

  /**
   * Reads the plan's warm runs now (see RECENT_MS), leaving the others in `plan.runs`. True when that
   * was everything (nothing to fetch, verify or read on the threadpool).
   */
  private readWarm (plan: Plan): boolean {
    const store = this.store
    if (store != null && plan.runs.length > 0 && store.packs.syncReads) {
      let cold: Run[] | undefined
      for (const r of plan.runs) {
        const n = r.cold || r.end - r.position > SYNC_RUN_MAX ? undefined : store.packs.readvNow(r.pack, r.position, r.buffers)
        if (n !== r.end - r.position) (cold ??= []).push(r)
      }
      store.packs.syncReadsTook(plan.now)
      plan.runs = cold ?? []
    }
    return plan.runs.length === 0 && plan.checks == null && plan.fetches == null
  }

  /** The rest of a plan: runs on the threadpool, fetches, then verifying what was read. */
  private async finish (plan: Plan, signal?: AbortSignal): Promise<void> {
    const { runs, fetches, checks } = plan
    if (runs.length === 1 && fetches == null) {
      await this.readRun(runs[0]!)
    } else if (runs.length > 0 || fetches != null) {
      const reads = runs.map(async r => { await this.readRun(r) })
      if (fetches != null) reads.push(this.fetch(fetches, signal))
      // Every read settles before we return or throw: none may write into `out` after that.
      const settled = await Promise.allSettled(reads)
      for (const s of settled) if (s.status === 'rejected') throw s.reason
    }
    for (const c of checks ?? []) {
      if (!sameDigest(nativeBlake3(c.bytes), c.node.digest(c.i))) {
        throw new HashMismatchError(`block ${c.node.leafCid(c.i)} is corrupt on disk (run: collective-peer fsck)`)
      }
      if (c.to != null) c.to.set(c.bytes.subarray(c.from!, c.from! + c.to.length))
      // Trusted from now on, unless the store moved blocks meanwhile (the node is located again and
      // its places may be new ones).
      if (this.store!.readGeneration === plan.generation) c.node.verified![c.i] = 1
    }
  }

  private async readRun (r: Run): Promise<void> {
    const n = await this.store!.packs.readv(r.pack, r.position, r.buffers)
    if (n !== r.end - r.position) throw new HashMismatchError(`pack ${r.pack} is shorter than its index says (run: collective-peer fsck)`)
  }

  /** Leaves the store lacks: through the export's blocks (lazy boot fetches them from the swarm). */
  private async fetch (fetches: Fetch[], signal?: AbortSignal): Promise<void> {
    for (let at = 0; at < fetches.length; at += FETCH_BATCH) {
      const batch = fetches.slice(at, at + FETCH_BATCH)
      const cids = batch.map(f => f.node.leafCid(f.i))
      const blocks = this.blocks.getMany != null
        ? await this.blocks.getMany(cids, { signal })
        : await Promise.all(cids.map(async cid => await this.blocks.get(cid, { signal })))
      batch.forEach((f, j) => {
        const bytes = blocks[j]!
        const length = f.node.ends[f.i]! - f.node.start(f.i)
        if (bytes.length !== length) throw new Error(`leaf ${cids[j]} has ${bytes.length} bytes, its parent says ${length}`)
        f.to.set(bytes.subarray(f.from, f.from + f.to.length))
        // It is in the store now (fetched and stored, or stored meanwhile): find it next time.
        f.node.stale = true
      })
    }
  }

  /** Finds (and keeps) the pack locations of a level-1 node's leaves: one index round trip. */
  private async locate (node: TreeNode, store: Blockstore): Promise<void> {
    while (node.locating != null) await node.locating
    const generation = store.readGeneration
    if (node.generation === generation && !node.stale) return
    node.locating = (async () => {
      const fresh = node.generation !== generation
      const want: number[] = []
      for (let i = 0; i < node.count; i++) if (node.holes![i] === 0 && (fresh || node.packs![i]! < 0)) want.push(i)
      node.stale = false
      const found = await store.locateMany(want.map(i => node.digest(i)))
      if (fresh) { node.packs!.fill(-1); node.verified!.fill(0) }
      want.forEach((i, j) => {
        const loc = found[j]
        // A stored length that disagrees with the parent's goes the generic way (which reports it).
        if (loc != null && loc.length === node.ends[i]! - node.start(i)) {
          node.packs![i] = loc.pack
          node.positions![i] = loc.offset
          node.verified![i] = 0
        }
      })
      // Locations found under an older generation are not trusted: the next read looks again.
      node.generation = store.readGeneration === generation ? generation : -1
    })()
    try {
      await node.locating
    } finally {
      node.locating = undefined
    }
  }

  /** The level-1 nodes overlapping [start, end) if all are cached (else undefined: leafNodes). */
  private cachedLeafNodes (start: number, end: number, out: Uint8Array | undefined): TreeNode[] | undefined {
    const nodes: TreeNode[] = []
    const waits: Array<Promise<TreeNode>> = []
    this.collect(this.tree, start, end, out, nodes, waits)
    return waits.length === 0 ? nodes : undefined
  }

  /**
   * The level-1 nodes overlapping [start, end), loading missing ones; holes above level 1 are
   * zero-filled in `out` (when given) on the way.
   */
  private async leafNodes (start: number, end: number, out: Uint8Array | undefined, signal?: AbortSignal): Promise<TreeNode[]> {
    while (true) {
      if (signal?.aborted === true) throw new AbortError()
      const nodes: TreeNode[] = []
      const waits: Array<Promise<TreeNode>> = []
      this.collect(this.tree, start, end, out, nodes, waits, signal)
      if (waits.length === 0) return nodes
      await Promise.all(waits)
    }
  }

  private collect (node: TreeNode, start: number, end: number, out: Uint8Array | undefined, nodes: TreeNode[], waits: Array<Promise<TreeNode>>, signal?: AbortSignal): void {
    if (node.level === 1) { nodes.push(node); return }
    for (let i = node.first(start); i < node.count; i++) {
      const linkStart = node.start(i)
      if (linkStart >= end) break
      if (node.childCids![i] === null) {
        out?.fill(0, Math.max(start, linkStart) - start, Math.min(end, node.ends[i]!) - start)
        continue
      }
      const child = node.children![i]
      if (child instanceof TreeNode) {
        this.lru.delete(child)
        this.lru.set(child, undefined)
        this.collect(child, start, end, out, nodes, waits, signal)
      } else {
        waits.push(child ?? this.load(node, i, signal))
      }
    }
  }

  private load (parent: TreeNode, i: number, signal?: AbortSignal): Promise<TreeNode> {
    const cid = parent.childCids![i]!
    // Assigned before the body runs past its first await (which is where it is compared).
    let promise!: Promise<TreeNode>
    promise = (async () => {
      const length = parent.ends[i]! - parent.start(i)
      const decoded = decodeNode(await this.blocks.get(cid, { signal }), parent.level - 1, length)
      const node = new TreeNode(parent.level - 1, parent.start(i), decoded.links, parent, i)
      if (parent.children![i] === promise) {
        parent.children![i] = node
        this.lru.set(node, undefined)
        this.evict()
      }
      return node
    })()
    parent.children![i] = promise
    promise.catch(() => { if (parent.children![i] === promise) parent.children![i] = undefined })
    return promise
  }

  private evict (): void {
    while (this.lru.size > CACHE_NODES) {
      const oldest: TreeNode = this.lru.keys().next().value!
      this.drop(oldest)
    }
  }

  private drop (node: TreeNode): void {
    this.lru.delete(node)
    if (node.parent?.children![node.slot] === node) node.parent.children![node.slot] = undefined
    for (const child of node.children ?? []) if (child instanceof TreeNode) this.drop(child)
  }

  async extents (offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<NbdExtent[]> {
    const end = Math.min(offset + length, this.size)
    const out: NbdExtent[] = []
    const add = (from: number, to: number, zero: boolean): boolean => {
      if (to <= from) return true
      const last = out[out.length - 1]
      // Extent lengths are u32 on the wire: split runs before they overflow.
      if (last != null && last.zero === zero && last.length + (to - from) <= 0xffff_f000) last.length += to - from
      else if (out.length === MAX_EXTENTS) return false
      else out.push({ length: to - from, zero })
      return true
    }
    for (let window = offset; window < end; window += EXTENTS_WINDOW) {
      const windowEnd = Math.min(end, window + EXTENTS_WINDOW)
      const nodes = await this.leafNodes(window, windowEnd, undefined, options.signal)
      // Holes above level 1 are the gaps between the level-1 nodes found.
      let pos = window
      for (const node of nodes) {
        if (!add(pos, Math.max(pos, node.base), true)) return out
        for (let i = node.first(window); i < node.count; i++) {
          const leafStart = node.start(i)
          if (leafStart >= windowEnd) break
          const from = Math.max(window, leafStart)
          const to = Math.min(windowEnd, node.ends[i]!)
          if (!add(from, to, node.holes![i] === 1)) return out
          pos = to
        }
      }
      if (!add(pos, windowEnd, true)) return out
    }
    return out
  }
}

/** The local store behind an export's blocks, when there is one (the fast read path). */
function localStore (blocks: ExportBlocks): Blockstore | undefined {
  if (blocks instanceof Blockstore) return blocks
  const store = (blocks as { store?: unknown }).store
  return store instanceof Blockstore ? store : undefined
}

function sameDigest (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
