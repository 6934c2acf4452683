import { DiskReader, type LeafEntry } from '../../dag/index.js'
import type { ExportBlocks } from '../disk-exports.js'
import type { CID } from 'multiformats/cid'
import type { NbdExport, NbdExtent } from '../interface.js'

/** Leaves fetched at once for one read (a 32 MiB read of 4 KiB leaves is 8192 of them). */
const FETCH_BATCH = 256
/** Extents returned per BLOCK_STATUS (the client asks again for the rest). */
const MAX_EXTENTS = 8192

/**
 * A disk DAG served read-only: offsets map to leaves in O(depth) (DiskReader), holes read as zeros
 * and report as holes in BLOCK_STATUS. Publisher disks are never written: writes go to the VM's
 * copy-on-write layer above this export.
 */
export class DagExport implements NbdExport {
  readonly readOnly = true
  readonly multiConn = true
  readonly description: string
  private readonly reader: DiskReader
  private readonly blocks: ExportBlocks

  private constructor (reader: DiskReader, blocks: ExportBlocks) {
    this.reader = reader
    this.blocks = blocks
    this.description = `collective-peer disk ${reader.cid.toString()}`
  }

  static async open (root: CID, blocks: ExportBlocks, options: { signal?: AbortSignal } = {}): Promise<DagExport> {
    return new DagExport(await DiskReader.open(root, blocks, options), blocks)
  }

  get root (): CID { return this.reader.cid }
  get size (): number { return this.reader.size }

  async read (offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.size)
    // Not zero-filled up front: every byte is either a leaf's (copied below) or a hole's (filled here).
    const out = Buffer.allocUnsafe(Math.max(0, end - offset))
    const leaves: LeafEntry[] = []
    for await (const leaf of this.reader.leavesIn(offset, end - offset, options)) {
      if (leaf.cid != null) leaves.push(leaf)
      else out.fill(0, Math.max(offset, leaf.offset) - offset, Math.min(end, leaf.offset + leaf.length) - offset)
    }
    const copy = (leaf: LeafEntry, bytes: Uint8Array): void => {
      if (bytes.length !== leaf.length) throw new Error(`leaf ${leaf.cid} has ${bytes.length} bytes, its parent says ${leaf.length}`)
      const from = Math.max(offset, leaf.offset)
      const to = Math.min(end, leaf.offset + leaf.length)
      out.set(bytes.subarray(from - leaf.offset, to - leaf.offset), from - offset)
    }
    for (let i = 0; i < leaves.length; i += FETCH_BATCH) {
      const batch = leaves.slice(i, i + FETCH_BATCH)
      if (this.blocks.getMany != null) {
        const blocks = await this.blocks.getMany(batch.map(l => l.cid!), options)
        batch.forEach((leaf, j) => { copy(leaf, blocks[j]!) })
      } else {
        await Promise.all(batch.map(async leaf => { copy(leaf, await this.blocks.get(leaf.cid!, options)) }))
      }
    }
    return out
  }

  async extents (offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<NbdExtent[]> {
    const end = Math.min(offset + length, this.size)
    const out: NbdExtent[] = []
    for await (const leaf of this.reader.leavesIn(offset, end - offset, options)) {
      const from = Math.max(offset, leaf.offset)
      const to = Math.min(end, leaf.offset + leaf.length)
      const zero = leaf.cid == null
      const last = out[out.length - 1]
      // Extent lengths are u32 on the wire: split runs before they overflow.
      if (last != null && last.zero === zero && last.length + (to - from) <= 0xffff_f000) last.length += to - from
      else if (out.length === MAX_EXTENTS) break
      else out.push({ length: to - from, zero })
    }
    return out
  }
}
