import { decodeNode, decodeRoot, type DiskNode, type DiskRoot, type Link } from './node.js'
import { RAW_CODE, blockId } from './hash.js'
import { throwIfAborted } from '../util/abort.js'
import type { CID } from 'multiformats/cid'

/** Where a DAG's blocks come from: the local store, or the store backed by the swarm. */
export interface BlockGetter {
  get(cid: CID, options?: { signal?: AbortSignal }): Promise<Uint8Array>
  /** Many blocks at once, in order (optional: readers fall back to `get`). */
  getMany?(cids: CID[], options?: { signal?: AbortSignal }): Promise<Uint8Array[]>
}

/** A leaf of the image: its place, and its CID (null for a hole). */
export interface LeafEntry {
  offset: number
  length: number
  cid: CID | null
}

/** An interior node met during a walk. */
export interface NodeEntry {
  cid: CID
  level: number
  offset: number
  length: number
  node: DiskNode
  bytes: Uint8Array
}

export interface WalkOptions {
  signal?: AbortSignal
  /** Return false to skip a node's subtree (e.g. one the other side of a diff already has). */
  enter?(cid: CID, level: number): boolean
  onNode?(entry: NodeEntry): void
}

/**
 * Reads a disk DAG: the root, any byte range (O(depth) node lookups per leaf, with a small cache of
 * decoded nodes), and walks over every leaf. Every block is checked on decode; lengths must add up.
 */
export class DiskReader {
  readonly cid: CID
  readonly root: DiskRoot
  private readonly blocks: BlockGetter
  private readonly cache = new Map<string, DiskNode>()
  private static readonly CACHE_NODES = 256

  private constructor (cid: CID, root: DiskRoot, blocks: BlockGetter) {
    this.cid = cid
    this.root = root
    this.blocks = blocks
  }

  static async open (cid: CID, blocks: BlockGetter, options: { signal?: AbortSignal } = {}): Promise<DiskReader> {
    const bytes = await blocks.get(cid, options)
    return new DiskReader(cid, decodeRoot(bytes), blocks)
  }

  get size (): number { return this.root.size }

  private async node (cid: CID, level: number, length: number, signal?: AbortSignal): Promise<DiskNode> {
    const key = blockId(cid)
    const hit = this.cache.get(key)
    if (hit != null) {
      // Least recently used goes first: a walk down keeps its upper levels.
      this.cache.delete(key)
      this.cache.set(key, hit)
      return hit
    }
    const node = decodeNode(await this.blocks.get(cid, { signal }), level, length)
    if (this.cache.size >= DiskReader.CACHE_NODES) this.cache.delete(this.cache.keys().next().value!)
    this.cache.set(key, node)
    return node
  }

  /** The leaves overlapping [offset, offset + length), in order. */
  async * leavesIn (offset: number, length: number, options: { signal?: AbortSignal } = {}): AsyncGenerator<LeafEntry> {
    const end = Math.min(offset + length, this.size)
    if (offset >= end) return
    yield * this.descend(this.root.links, this.root.height, 0, offset, end, options.signal)
  }

  private async * descend (links: Link[], height: number, base: number, start: number, end: number, signal?: AbortSignal): AsyncGenerator<LeafEntry> {
    let pos = base
    // Binary search would save little: nodes hold ~128 links and the scan is arithmetic only.
    for (const [cid, length] of links) {
      const next = pos + length
      if (next > start && pos < end) {
        if (cid === null || height === 1) {
          yield { offset: pos, length, cid }
        } else {
          throwIfAborted(signal)
          const child = await this.node(cid, height - 1, length, signal)
          yield * this.descend(child.links, height - 1, pos, start, end, signal)
        }
      }
      if (next >= end) break
      pos = next
    }
  }

  /** Reads bytes [offset, offset + length) of the image (clipped at its end); holes read as zeros. */
  async read (offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.size)
    const out = new Uint8Array(Math.max(0, end - offset))
    for await (const leaf of this.leavesIn(offset, end - offset, options)) {
      if (leaf.cid == null) continue
      const bytes = await this.blocks.get(leaf.cid, options)
      if (bytes.length !== leaf.length) throw new Error(`leaf ${leaf.cid} has ${bytes.length} bytes, its parent says ${leaf.length}`)
      const from = Math.max(offset, leaf.offset)
      const to = Math.min(end, leaf.offset + leaf.length)
      out.set(bytes.subarray(from - leaf.offset, to - leaf.offset), from - offset)
    }
    return out
  }

  /**
   * Walks the whole DAG depth-first in byte order, yielding leaves; interior nodes go to `onNode`.
   * `enter` may prune subtrees. Leaves are not fetched.
   */
  async * walk (options: WalkOptions = {}): AsyncGenerator<LeafEntry> {
    yield * this.walkLinks(this.root.links, this.root.height, 0, options)
  }

  private async * walkLinks (links: Link[], height: number, base: number, options: WalkOptions): AsyncGenerator<LeafEntry> {
    let pos = base
    for (const [cid, length] of links) {
      if (cid === null || cid.code === RAW_CODE) {
        yield { offset: pos, length, cid }
      } else if (options.enter?.(cid, height - 1) !== false) {
        throwIfAborted(options.signal)
        const bytes = await this.blocks.get(cid, options)
        const node = decodeNode(bytes, height - 1, length)
        options.onNode?.({ cid, level: height - 1, offset: pos, length, node, bytes })
        yield * this.walkLinks(node.links, height - 1, pos, options)
      }
      pos += length
    }
  }
}
