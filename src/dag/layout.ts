import { DISK_FORMAT, DISK_FORMAT_VERSION, encodeNode, heightFor, levelSpan, type DiskRoot, type Link } from './node.js'
import type { CID } from 'multiformats/cid'
import type { ChunkerParams } from './chunker/interface.js'

export interface EncodedBlock { cid: CID, bytes: Uint8Array }

interface Level {
  slot: number
  start: number
  length: number
  links: Link[]
}

function pushLink (links: Link[], link: Link): void {
  const last = links[links.length - 1]
  // Adjacent zero runs merge: a sparse disk costs one link per hole, whatever its size.
  if (last != null && last[0] === null && link[0] === null) last[1] += link[1]
  else links.push([link[0], link[1]])
}

/**
 * Builds a disk DAG bottom-up from the chunk stream, in one pass and bounded memory.
 *
 * Nodes group their children by byte offset, like a radix tree: the level-k node for slot s holds
 * the children that start in [s*span_k, (s+1)*span_k), span_k = chunkSize * fanout^k. Disk updates
 * happen in place, so a chunk that splits or merges only rewrites the nodes over its own bytes,
 * never the grouping of everything after it (count-based grouping would shift it). A node whose
 * children are all holes is a hole itself and is not stored.
 */
export class LayoutBuilder {
  private readonly params: ChunkerParams
  private readonly fanout: number
  private readonly size: number
  readonly height: number
  private readonly levels: Level[] = []
  private readonly root: Link[] = []
  private readonly emit: (block: EncodedBlock) => void

  constructor (size: number, params: ChunkerParams, fanout: number, emit: (block: EncodedBlock) => void) {
    this.size = size
    this.params = params
    this.fanout = fanout
    this.height = heightFor(size, params, fanout)
    this.emit = emit
    for (let level = 1; level < this.height; level++) this.levels.push({ slot: -1, start: 0, length: 0, links: [] })
  }

  /** Adds the next leaf (or hole) of the image, in offset order. */
  addLeaf (offset: number, length: number, cid: CID | null): void {
    this.add(1, offset, [cid, length])
  }

  private add (level: number, offset: number, link: Link): void {
    if (level === this.height) {
      pushLink(this.root, link)
      return
    }
    const state = this.levels[level - 1]!
    const slot = Math.floor(offset / levelSpan(this.params, this.fanout, level))
    if (slot !== state.slot && state.links.length > 0) this.flush(level)
    if (state.links.length === 0) {
      state.slot = slot
      state.start = offset
    }
    pushLink(state.links, link)
    state.length += link[1]
  }

  private flush (level: number): void {
    const state = this.levels[level - 1]!
    if (state.links.length === 0) return
    let link: Link
    if (state.links.every(([cid]) => cid === null)) {
      link = [null, state.length]
    } else {
      const block = encodeNode({ links: state.links })
      this.emit(block)
      link = [block.cid, state.length]
    }
    const { start } = state
    state.links = []
    state.length = 0
    this.add(level + 1, start, link)
  }

  /** Flushes every level and returns the encoded root (also passed to `emit`). */
  finish (): EncodedBlock & { root: DiskRoot } {
    for (let level = 1; level < this.height; level++) this.flush(level)
    const root: DiskRoot = {
      format: DISK_FORMAT,
      version: DISK_FORMAT_VERSION,
      size: this.size,
      chunker: { kind: this.params.kind, size: this.params.size },
      fanout: this.fanout,
      height: this.height,
      links: this.root
    }
    const block = encodeNode(root)
    this.emit(block)
    return { ...block, root }
  }
}
