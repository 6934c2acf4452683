import { DagExport } from './nbd/dag-export.js'
import { parseCid, type CID } from '../dag/hash.js'
import { CollectiveError } from '../errors.js'
import type { BlockGetter } from '../dag/index.js'
import type { NbdExport } from './interface.js'

/** Where the exports' blocks come from: the store (and, for lazy boot, the swarm behind it). */
export interface ExportBlocks extends BlockGetter {
  has(cid: CID): Promise<boolean>
  /** Many blocks at once (the store batches index lookups and coalesces pack reads). */
  getMany?(cids: CID[], options?: { signal?: AbortSignal }): Promise<Uint8Array[]>
}

/**
 * The disk exports of a host, named by their root CID (`nbd+unix:///<cid>?socket=…`): any disk
 * root whose root block the store holds (or, with lazy boot, the swarm has) can be served. Opened on first use and kept (a decoded root
 * is small); `list` names the roots of running VMs.
 */
export class DiskExports {
  private readonly blocksFor: (root: CID) => ExportBlocks
  private readonly open = new Map<string, Promise<DagExport>>()
  private readonly listed = new Map<string, number>()

  /** `blocks`: one source for every root (the store), or one per root (lazy boot fetches by root). */
  constructor (blocks: ExportBlocks | ((root: CID) => ExportBlocks)) {
    this.blocksFor = typeof blocks === 'function' ? blocks : () => blocks
  }

  /** The NBD server's resolver: undefined for names that are not a disk root here. */
  async resolve (name: string, options: { signal?: AbortSignal } = {}): Promise<NbdExport | undefined> {
    let cid: CID
    try {
      cid = parseCid(name)
    } catch {
      return undefined
    }
    const key = cid.toString()
    let opening = this.open.get(key)
    if (opening == null) {
      const blocks = this.blocksFor(cid)
      if (!await blocks.has(cid)) return undefined
      opening = DagExport.open(cid, blocks, options)
      this.open.set(key, opening)
      opening.catch(() => { this.open.delete(key) })
    }
    try {
      return await opening
    } catch (err) {
      // Not a disk root (a leaf, or a node that does not decode as a root): no such export.
      if (err instanceof CollectiveError) return undefined
      throw err
    }
  }

  /** Opens the export of `root` now (failing loudly if it is not a disk root in the store). */
  async get (root: CID, options: { signal?: AbortSignal } = {}): Promise<DagExport> {
    const key = root.toString()
    let opening = this.open.get(key)
    if (opening == null) {
      opening = DagExport.open(root, this.blocksFor(root), options)
      this.open.set(key, opening)
      opening.catch(() => { this.open.delete(key) })
    }
    return await opening
  }

  /** Lists `root` for NBD_OPT_LIST while a VM uses it (counted: two VMs may share a root). */
  retain (root: string): void { this.listed.set(root, (this.listed.get(root) ?? 0) + 1) }

  release (root: string): void {
    const n = (this.listed.get(root) ?? 0) - 1
    if (n <= 0) this.listed.delete(root)
    else this.listed.set(root, n)
  }

  list (): string[] { return [...this.listed.keys()] }
}
