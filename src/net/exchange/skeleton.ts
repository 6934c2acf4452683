import { decodeLeafLinks, decodeNode, decodeRoot, type DiskRoot, type Link } from '../../dag/node.js'
import { digestId, leafCidFromBytes } from '../../dag/hash.js'
import type { CID } from 'multiformats/cid'

/** A raw BLAKE3 CIDv1 in binary: 0x01 0x55 0x1e 0x20 and the digest. */
const CID_BYTES = 36

/**
 * The shape of a disk DAG: its interior nodes and its leaves in byte order. Leaf i of the list is
 * bit i of a HAVE bitfield. Holes are not leaves.
 *
 * Leaves are kept as their CIDs' bytes in one buffer, not as CID objects: a CID with its digest and
 * views is ~430 bytes of heap, and a 16 GiB image has 920 000 leaves (a pull held them all, and a
 * seeder computing its HAVE held them again). `leafCid` makes one when it is needed.
 */
export interface Skeleton {
  root: CID
  disk: DiskRoot
  /** Interior nodes (root excluded), with their encoded sizes. */
  nodes: Array<{ cid: CID, size: number }>
  /** How many leaves. */
  count: number
  /**
   * The leaves' CIDs in binary, 36 bytes each, in order (every leaf is a raw BLAKE3 CIDv1: decodeNode
   * checks). A CID made of a view of this buffer costs no allocation of bytes (a CID of its own
   * small array cost V8 ~3 µs per leaf, the first time its `.buffer` was read).
   */
  cidBytes: Uint8Array
  /** `blockId` of each leaf (computed once, here). */
  ids: string[]
  leafSizes: number[]
  /** blockId → its first leaf index: one entry per distinct block (numbers, no object per leaf). */
  first: Map<string, number>
  /** blockId → every leaf index, for the blocks at several indices only (a chunk that repeats). */
  repeats: Map<string, number[]>
}

/** Leaf i's digest (a view). */
export function leafDigest (skeleton: Skeleton, i: number): Uint8Array {
  return skeleton.cidBytes.subarray(i * CID_BYTES + 4, (i + 1) * CID_BYTES)
}

/** Leaf i's CID (a new object each call, over a view of the skeleton's buffer). */
export function leafCid (skeleton: Skeleton, i: number): CID {
  return leafCidFromBytes(leafCidBytes(skeleton, i))
}

/** Leaf i's CID in binary (a view of the skeleton's buffer). */
export function leafCidBytes (skeleton: Skeleton, i: number): Uint8Array {
  return skeleton.cidBytes.subarray(i * CID_BYTES, (i + 1) * CID_BYTES)
}

/** Every leaf's digest (views), in order. */
export function leafDigests (skeleton: Skeleton): Uint8Array[] {
  return Array.from({ length: skeleton.count }, (_, i) => leafDigest(skeleton, i))
}

/** Every leaf's CID, in order (for tools and tests: a pull never holds them all). */
export function leafCids (skeleton: Skeleton): CID[] {
  return Array.from({ length: skeleton.count }, (_, i) => leafCid(skeleton, i))
}

/** Fetches many blocks at once (locally, or through peers). */
export type FetchMany = (cids: CID[]) => Promise<Uint8Array[]>

/** Leaves in order, appended a node's links at a time (their CIDs are garbage as soon as read). */
class LeafList {
  count = 0
  cidBytes = new Uint8Array(CID_BYTES * 1024)
  readonly ids: string[] = []
  readonly sizes: number[] = []
  readonly first = new Map<string, number>()
  readonly repeats = new Map<string, number[]>()

  add (links: Link[]): void {
    for (const [cid, length] of links) {
      if (cid != null) this.push(cid.bytes, 0, digestId(cid.multihash.digest), length)
    }
  }

  /** A bottom node's leaves as `decodeLeafLinks` finds them in its bytes (no CID objects). */
  addFrom (bytes: Uint8Array, { cidAt, lengths }: { cidAt: Int32Array, lengths: number[] }): void {
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    for (let k = 0; k < lengths.length; k++) {
      const at = cidAt[k]!
      if (at >= 0) this.push(bytes, at, text.toString('latin1', at + 4, at + CID_BYTES), lengths[k]!)
    }
  }

  /** A leaf whose CID is the 36 bytes of `from` at `at`, and whose `digestId` is `id`. */
  private push (from: Uint8Array, at: number, id: string, length: number): void {
    if ((this.count + 1) * CID_BYTES > this.cidBytes.length) {
      const grown = new Uint8Array(this.cidBytes.length * 2)
      grown.set(this.cidBytes)
      this.cidBytes = grown
    }
    const i = this.count++
    const to = i * CID_BYTES
    for (let k = 0; k < CID_BYTES; k++) this.cidBytes[to + k] = from[at + k]!
    const seen = this.first.get(id)
    if (seen == null) this.first.set(id, i)
    else {
      const all = this.repeats.get(id)
      if (all != null) all.push(i)
      else this.repeats.set(id, [seen, i])
    }
    this.ids.push(id)
    this.sizes.push(length)
  }
}

/**
 * Loads a skeleton breadth-first: all nodes of a level are fetched together, so a remote load costs
 * one round trip per level instead of one per node. The bottom nodes' leaves are listed as each node
 * is decoded: holding every leaf's CID until the end made a 4 GiB pull's resident size peak at
 * ~550 MB while it started (a CID is ~430 bytes of heap, and they lived long enough to be promoted).
 */
export async function loadSkeleton (root: CID, rootBytes: Uint8Array, fetchMany: FetchMany): Promise<Skeleton> {
  const disk = decodeRoot(rootBytes)
  const nodes: Skeleton['nodes'] = []
  const leaves = new LeafList()
  let links: Link[] = disk.links
  for (let level = disk.height - 1; level >= 1; level--) {
    const children = links.filter((l): l is [CID, number] => l[0] != null)
    const blocks = await fetchMany(children.map(([cid]) => cid))
    const next: Link[] = []
    children.forEach(([cid, length], i) => {
      const bytes = blocks[i]!
      nodes.push({ cid, size: bytes.length })
      const found = level === 1 ? decodeLeafLinks(bytes, length) : undefined
      if (found != null) {
        leaves.addFrom(bytes, found)
        return
      }
      const decoded = decodeNode(bytes, level, length).links
      if (level === 1) leaves.add(decoded)
      else for (const link of decoded) next.push(link)
    })
    links = next
  }
  if (disk.height === 1) leaves.add(disk.links)
  const cidBytes = leaves.cidBytes.slice(0, leaves.count * CID_BYTES)
  return { root, disk, nodes, count: leaves.count, cidBytes, ids: leaves.ids, leafSizes: leaves.sizes, first: leaves.first, repeats: leaves.repeats }
}
