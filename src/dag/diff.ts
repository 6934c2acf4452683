import { DiskReader, type BlockGetter } from './reader.js'
import { wireSize } from './wire.js'
import { blockId } from './hash.js'
import type { CID } from 'multiformats/cid'

/** Blocks read at once to size them on the wire (a multiple of the exchange's batch of 32). */
const WIRE_WINDOW = 1024

export interface DiffBlock {
  cid: CID
  size: number
}

export interface DiffResult {
  /** Blocks of `new` that `old` does not have (nodes and leaves, each once). */
  blocks: number
  bytes: number
  /** What those blocks cost on the wire, compressed as the exchange sends them. */
  wireBytes: number
  list: DiffBlock[]
}

export interface DiffOptions {
  signal?: AbortSignal
  /** Skip reading leaves to size them on the wire (wireBytes is then 0). */
  noWire?: boolean
  /**
   * What the blocks, in the order listed, cost on the wire (the exchange's codec; it compresses
   * neighbouring blocks together). Undefined from it, or absent: DEFLATE per block.
   */
  wireCost?: (blocks: Uint8Array[]) => number | undefined
}


/**
 * The blocks a host holding `old` must fetch to have `next`: every block reachable from `next` that
 * is not reachable from `old`. Subtrees of `next` whose root CID `old` has are skipped whole.
 */
export async function diff (blocks: BlockGetter, old: CID, next: CID, options: DiffOptions = {}): Promise<DiffResult> {
  const have = new Set<string>([blockId(old)])
  const oldReader = await DiskReader.open(old, blocks, options)
  for await (const leaf of oldReader.walk({ signal: options.signal, onNode: ({ cid }) => have.add(blockId(cid)) })) {
    if (leaf.cid != null) have.add(blockId(leaf.cid))
  }
  const list: DiffBlock[] = []
  const added = new Set<string>()
  const need = (cid: CID, size: number): void => {
    const key = blockId(cid)
    if (have.has(key) || added.has(key)) return
    added.add(key)
    list.push({ cid, size })
  }
  const newReader = await DiskReader.open(next, blocks, options)
  const rootBytes = await blocks.get(next, options)
  need(next, rootBytes.length)
  if (!have.has(blockId(next))) {
    for await (const leaf of newReader.walk({
      signal: options.signal,
      enter: cid => !have.has(blockId(cid)),
      onNode: ({ cid, bytes }) => need(cid, bytes.length)
    })) {
      if (leaf.cid != null) need(leaf.cid, leaf.length)
    }
  }
  let bytes = 0
  let wireBytes = 0
  for (const block of list) bytes += block.size
  if (options.noWire !== true) {
    // A window of blocks at a time: the codec sees them in order, and memory stays bounded.
    for (let i = 0; i < list.length; i += WIRE_WINDOW) {
      const window = await Promise.all(list.slice(i, i + WIRE_WINDOW).map(async b => await blocks.get(b.cid, options)))
      wireBytes += options.wireCost?.(window) ?? window.reduce((n, b) => n + wireSize(b), 0)
    }
  }
  return { blocks: list.length, bytes, wireBytes, list }
}
