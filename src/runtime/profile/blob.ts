import { DiskReader, type BlockGetter } from '../../dag/index.js'
import { InvalidBootProfileError } from '../errors.js'
import type { CID } from 'multiformats/cid'

/** The bytes of a small content-addressed blob (an imported file), refused above `maxBytes`. */
export async function readBlob (blocks: BlockGetter, root: CID, maxBytes: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
  const reader = await DiskReader.open(root, blocks, options)
  if (reader.size > maxBytes) throw new InvalidBootProfileError(`blob ${root} has ${reader.size} bytes (at most ${maxBytes})`)
  const out = new Uint8Array(reader.size)
  for await (const leaf of reader.leavesIn(0, reader.size, options)) {
    if (leaf.cid == null) continue // a hole: zeros already
    const bytes = await blocks.get(leaf.cid, options)
    if (bytes.length !== leaf.length) throw new InvalidBootProfileError(`blob ${root}: leaf ${leaf.cid} has ${bytes.length} bytes, not ${leaf.length}`)
    out.set(bytes, leaf.offset)
  }
  return out
}
