import { decodeNode, decodeRoot, type DiskRoot, type Link } from '../../dag/node.js'
import { blockId } from '../../dag/hash.js'
import type { CID } from 'multiformats/cid'

/**
 * The shape of a disk DAG: its interior nodes and its leaves in byte order. Leaf i of the list is
 * bit i of a HAVE bitfield. Holes are not leaves.
 */
export interface Skeleton {
  root: CID
  disk: DiskRoot
  /** Interior nodes (root excluded), with their encoded sizes. */
  nodes: Array<{ cid: CID, size: number }>
  leaves: CID[]
  /** `blockId` of each leaf (computed once, here). */
  ids: string[]
  leafSizes: number[]
  /** blockId → leaf indices (a chunk that repeats is one block at several indices). */
  index: Map<string, number[]>
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
      next.push(...decodeNode(bytes, level, length).links)
    })
    links = next
  }
  const leaves: CID[] = []
  const ids: string[] = []
  const leafSizes: number[] = []
  const index = new Map<string, number[]>()
  for (const [cid, length] of links) {
    if (cid == null) continue
    const id = blockId(cid)
    const at = index.get(id)
    if (at != null) at.push(leaves.length)
    else index.set(id, [leaves.length])
    leaves.push(cid)
    ids.push(id)
    leafSizes.push(length)
  }
  return { root, disk, nodes, leaves, ids, leafSizes, index }
}
