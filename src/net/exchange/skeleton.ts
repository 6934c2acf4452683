import { decodeNode, decodeRoot, type DiskRoot, type Link } from '../../dag/node.js'
import { digestId, rawCidOfDigest } from '../../dag/hash.js'
import type { CID } from 'multiformats/cid'

/**
 * The shape of a disk DAG: its interior nodes and its leaves in byte order. Leaf i of the list is
 * bit i of a HAVE bitfield. Holes are not leaves.
 *
 * Leaves are kept as their digests in one buffer, not as CID objects: a CID with its digest and
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
  /** The leaves' BLAKE3 digests, 32 bytes each, in order (every leaf is a raw BLAKE3 CIDv1: decodeNode checks). */
  digests: Uint8Array
  /** `blockId` of each leaf (computed once, here). */
  ids: string[]
  leafSizes: number[]
  /** blockId → leaf indices (a chunk that repeats is one block at several indices). */
  index: Map<string, number[]>
}

/** Leaf i's digest (a view). */
export function leafDigest (skeleton: Skeleton, i: number): Uint8Array {
  return skeleton.digests.subarray(i * 32, i * 32 + 32)
}

/** Leaf i's CID (a new object each call). */
export function leafCid (skeleton: Skeleton, i: number): CID {
  return rawCidOfDigest(leafDigest(skeleton, i))
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

/**
 * Loads a skeleton breadth-first: all nodes of a level are fetched together, so a remote load costs
 * one round trip per level instead of one per node.
 */
export async function loadSkeleton (root: CID, rootBytes: Uint8Array, fetchMany: FetchMany): Promise<Skeleton> {
  const disk = decodeRoot(rootBytes)
  const nodes: Skeleton['nodes'] = []
  let links: Link[] = disk.links
  for (let level = disk.height - 1; level >= 1; level--) {
    const children = links.filter((l): l is [CID, number] => l[0] != null)
    const blocks = await fetchMany(children.map(([cid]) => cid))
    const next: Link[] = []
    children.forEach(([cid, length], i) => {
      const bytes = blocks[i]!
      nodes.push({ cid, size: bytes.length })
      for (const link of decodeNode(bytes, level, length).links) next.push(link)
    })
    links = next
  }
  let count = 0
  for (const [cid] of links) if (cid != null) count++
  const digests = new Uint8Array(count * 32)
  const ids: string[] = new Array(count)
  const leafSizes: number[] = new Array(count)
  const index = new Map<string, number[]>()
  let i = 0
  for (const [cid, length] of links) {
    if (cid == null) continue
    const digest = digests.subarray(i * 32, i * 32 + 32)
    digest.set(cid.multihash.digest)
    const id = digestId(digest)
    const at = index.get(id)
    if (at != null) at.push(i)
    else index.set(id, [i])
    ids[i] = id
    leafSizes[i] = length
    i++
  }
  return { root, disk, nodes, count, digests, ids, leafSizes, index }
}
