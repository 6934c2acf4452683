import type { CID } from 'multiformats/cid'

export interface Block {
  cid: CID
  bytes: Uint8Array
  /** `blockId(cid)`, if the caller has it already (a pull does: it keys its items by it). */
  id?: string
}

export interface PutResult {
  /** Blocks that were not in the store before. */
  stored: number
  /** Their bytes. */
  bytes: number
}

/** A named root that keeps its blocks from garbage collection. */
export interface Pin {
  name: string
  root: string
  /** The image size in bytes (for disks). */
  size: number
  created: string
}

export interface GcResult {
  blocksRemoved: number
  bytesRemoved: number
  packsRewritten: number
  /** Bytes of pack files given back to the filesystem. */
  bytesReclaimed: number
}

export interface FsckResult {
  blocks: number
  bytes: number
  /** Blocks whose bytes did not match their hash (removed from the index). */
  corrupt: string[]
  /** Pins whose DAG is not complete in the store, with a missing block each. */
  incomplete: Array<{ name: string, missing: string }>
}

export type StoreProgressEvent =
  | { type: 'fsck:progress', blocks: number, bytes: number }
  | { type: 'gc:mark', blocks: number }
  | { type: 'gc:sweep', blocksRemoved: number }
