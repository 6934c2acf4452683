import { BlockMissingError } from '../errors.js'
import type { CID } from 'multiformats/cid'
import type { Blockstore } from '../store/blockstore.js'
import type { ExportBlocks } from './disk-exports.js'

/** Where blocks the store lacks come from: the swarm (the daemon's block exchange). */
export interface BlockFetcher {
  /** Blocks of `root` now, at demand priority (or `priority`: 1 prefetch, 2 background); verified and stored. */
  fetch(root: CID, cids: CID[], options?: { signal?: AbortSignal, timeoutMs?: number, priority?: 0 | 1 | 2 }): Promise<Uint8Array[]>
  /** Every block of `root` the store lacks, in the background (low priority). */
  pull(root: CID, options?: { signal?: AbortSignal }): Promise<unknown>
}

/** How long `has` waits for some peer to send a block this host lacks (a cold boot's root). */
const HAS_TIMEOUT = 10_000

/**
 * The blocks of one disk root for its NBD export: from the store, and when a block is not there yet,
 * from the swarm at demand priority, so a VM boots before its disk is fully local (lazy boot).
 */
export class LazyBlocks implements ExportBlocks {
  /** The local store (NBD exports read it directly; see DagExport). */
  readonly store: Blockstore
  private readonly root: CID
  private readonly fetcher: BlockFetcher
  private readonly onFetched?: (cids: CID[], bytes: number) => void

  constructor (store: Blockstore, root: CID, fetcher: BlockFetcher, onFetched?: (cids: CID[], bytes: number) => void) {
    this.store = store
    this.root = root
    this.fetcher = fetcher
    this.onFetched = onFetched
  }

  /** Whether the block can be read: held here, or fetched now (a cold boot's root). */
  async has (cid: CID): Promise<boolean> {
    if (await this.store.has(cid)) return true
    try {
      const [bytes] = await this.fetcher.fetch(this.root, [cid], { timeoutMs: HAS_TIMEOUT })
      this.onFetched?.([cid], bytes!.length)
      return true
    } catch {
      return false
    }
  }

  async get (cid: CID, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    try {
      return await this.store.get(cid, options)
    } catch (err) {
      if (!(err instanceof BlockMissingError)) throw err
    }
    const [bytes] = await this.fetcher.fetch(this.root, [cid], options)
    this.onFetched?.([cid], bytes!.length)
    return bytes!
  }

  async getMany (cids: CID[], options: { signal?: AbortSignal } = {}): Promise<Uint8Array[]> {
    const present = await this.store.hasMany(cids)
    const missing = cids.filter((_, i) => present[i] !== true)
    if (missing.length === 0) return await this.store.getMany(cids, options)
    const fetched = await this.fetcher.fetch(this.root, missing, options)
    this.onFetched?.(missing, fetched.reduce((n, b) => n + b.length, 0))
    const local = cids.filter((_, i) => present[i] === true)
    const localBytes = local.length > 0 ? await this.store.getMany(local, options) : []
    let f = 0
    let l = 0
    return cids.map((_, i) => present[i] === true ? localBytes[l++]! : fetched[f++]!)
  }
}
