import type { Libp2p } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { Blockstore } from '../store/blockstore.js'

/** Progress of a pull, for progress bars and --json. */
export type PullProgressEvent =
  | { type: 'pull:start', root: string, size: number, blocks: number, have: number }
  /** `bytesCommitted`: fetched bytes durable in the store (a killed pull will not fetch them again). */
  | { type: 'pull:progress', root: string, blocksFetched: number, bytesFetched: number, bytesCommitted: number, blocksTotal: number, bytesTotal: number, peers: number }
  | { type: 'pull:peer-dropped', peer: string, reason: string }

export interface PullOptions {
  signal?: AbortSignal
  onProgress?(event: PullProgressEvent): void
  /** Give up when no provider has been found for this long (ms). */
  findTimeout?: number
}

export interface PullResult {
  root: CID
  size: number
  blocks: number
  /** Block bytes received from peers (after decompression). */
  bytesFetched: number
  /** Bytes received on the wire for those blocks. */
  wireBytes: number
  peers: number
}

/** A fetch of particular blocks now (a booting VM's reads), outside any pull. */
export interface FetchOptions {
  signal?: AbortSignal
  /** @default 0 (demand: peers serve it before prefetch and background pulls) */
  priority?: 0 | 1 | 2
  /** Give up when no peer has sent a block for this long (ms). @default 30 s */
  timeoutMs?: number
}

export interface TransferStats {
  bytesSent: number
  bytesReceived: number
  blocksSent: number
  blocksReceived: number
  /** Bytes per second over the last few seconds. */
  sendRate: number
  receiveRate: number
}

/**
 * The block exchange service (`/collective/blocks/1.0.0`): serves the blocks this host holds and
 * fetches DAGs from many peers at once. Created over a running libp2p node and the store.
 */
export interface BlockExchange {
  start(): Promise<void>
  stop(): Promise<void>
  /** Fetches every block of the disk DAG `root` that the store lacks; does not pin. */
  pull(root: CID, options?: PullOptions): Promise<PullResult>
  /**
   * Fetches blocks of the disk DAG `root` now, at demand priority, from peers that hold `root`
   * (connected peers and DHT providers): verified, stored, returned in order. Blocks already in the
   * store are read from it. Rejects with ERR_BLOCK_MISSING when no peer sends one in time.
   */
  fetch(root: CID, cids: CID[], options?: FetchOptions): Promise<Uint8Array[]>
  /** Announces that this host holds `root` (DHT provider record, refreshed while running). */
  provide(root: CID, options?: { signal?: AbortSignal }): Promise<void>
  stats(): TransferStats
  /** Block bytes exchanged with each peer (by peer id). */
  peerStats(): Map<string, { bytesSent: number, bytesReceived: number }>
  /** Whether a block stream of ours to this peer (by peer id) is open. */
  hasBlockStream(peer: string): boolean
}

export interface ExchangeComponents {
  libp2p: Libp2p
  blockstore: Blockstore
}
