import { DiskReader, type BlockGetter } from './reader.js'
import { wireSize } from './wire.js'
import { blockId } from './hash.js'
import type { CID } from 'multiformats/cid'

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
  for (const block of list) {
    bytes += block.size
    if (options.noWire !== true) wireBytes += wireSize(await blocks.get(block.cid, options))
  }
  return { blocks: list.length, bytes, wireBytes, list }
}
