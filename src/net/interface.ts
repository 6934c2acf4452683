import type { Libp2p } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { Blockstore } from '../store/blockstore.js'

/** Progress of a pull, for progress bars and --json. */
export type PullProgressEvent =
  | { type: 'pull:start', root: string, size: number, blocks: number, have: number }
  | { type: 'pull:progress', root: string, blocksFetched: number, bytesFetched: number, blocksTotal: number, bytesTotal: number, peers: number }
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
  /** Announces that this host holds `root` (DHT provider record, refreshed while running). */
  provide(root: CID, options?: { signal?: AbortSignal }): Promise<void>
  stats(): TransferStats
  /** Block bytes exchanged with each peer (by peer id). */
  peerStats(): Map<string, { bytesSent: number, bytesReceived: number }>
}

export interface ExchangeComponents {
  libp2p: Libp2p
  blockstore: Blockstore
}
