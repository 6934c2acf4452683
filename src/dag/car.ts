import { createReadStream, createWriteStream } from 'node:fs'
import { rename, unlink } from 'node:fs/promises'
import { once } from 'node:events'
import { CarWriter, CarBlockIterator } from '@ipld/car'
import { DiskReader, type BlockGetter } from './reader.js'
import { decodeRoot } from './node.js'
import { BLAKE3_CODE, verifyBlock } from './hash.js'
import { InvalidCarError, fromSystemError } from '../errors.js'
import { MAX_BLOCK_SIZE } from './node.js'
import type { Blockstore } from '../store/blockstore.js'
import type { CID } from 'multiformats/cid'

/** Writes a CARv1 holding every block of a disk DAG (root first, then in walk order, each once). */
export async function exportCar (blocks: BlockGetter, root: CID, path: string, options: { signal?: AbortSignal } = {}): Promise<{ blocks: number, bytes: number }> {
  const reader = await DiskReader.open(root, blocks, options)
  const { writer, out } = CarWriter.create([root])
  const tmp = `${path}.partial-${process.pid}`
  const file = createWriteStream(tmp)
  const piped = (async () => {
    for await (const chunk of out) {
      if (!file.write(chunk)) await once(file, 'drain')
    }
    file.end()
    await once(file, 'finish')
  })()
  let count = 0
  let bytes = 0
  const seen = new Set<string>()
  const add = async (cid: CID, data: Uint8Array): Promise<void> => {
    const key = cid.toString()
    if (seen.has(key)) return
    seen.add(key)
    await writer.put({ cid: cid as any, bytes: data })
    count++
    bytes += data.length
  }
  try {
    await add(root, await blocks.get(root, options))
    const nodes: Array<{ cid: CID, bytes: Uint8Array }> = []
    for await (const leaf of reader.walk({ ...options, onNode: ({ cid, bytes }) => nodes.push({ cid, bytes }) })) {
      while (nodes.length > 0) {
        const node = nodes.shift()!
        await add(node.cid, node.bytes)
      }
      if (leaf.cid != null) await add(leaf.cid, await blocks.get(leaf.cid, options))
    }
    for (const node of nodes) await add(node.cid, node.bytes)
    await writer.close()
    await piped
    await rename(tmp, path)
  } catch (err) {
    file.destroy()
    await unlink(tmp).catch(() => {})
    throw fromSystemError(err, path)
  }
  return { blocks: count, bytes }
}

/**
 * Reads a CARv1 into the store, verifying every block's hash before it is kept. Only BLAKE3 blocks
 * are accepted and the (single) root must be a disk root. Returns the root.
 */
export async function importCar (store: Blockstore, path: string, options: { signal?: AbortSignal } = {}): Promise<{ root: CID, blocks: number, bytesStored: number }> {
  let iterator
  try {
    iterator = await CarBlockIterator.fromIterable(createReadStream(path))
  } catch (err: any) {
    const e = fromSystemError(err, path)
    if (e !== err) throw e
    throw new InvalidCarError(`${path}: not a CAR file (${err?.message})`)
  }
  const roots = await iterator.getRoots()
  if (roots.length !== 1) throw new InvalidCarError(`${path}: expected one root, found ${roots.length}`)
  const root = roots[0] as unknown as CID
  let batch: Array<{ cid: CID, bytes: Uint8Array }> = []
  let blocks = 0
  let bytesStored = 0
  let sawRoot = false
  try {
    for await (const block of iterator) {
      const cid = block.cid as unknown as CID
      if (cid.multihash.code !== BLAKE3_CODE) throw new InvalidCarError(`${path}: block ${cid} is not hashed with BLAKE3`)
      if (block.bytes.length > MAX_BLOCK_SIZE) throw new InvalidCarError(`${path}: block ${cid} is larger than ${MAX_BLOCK_SIZE} bytes`)
      if (!verifyBlock(cid, block.bytes)) throw new InvalidCarError(`${path}: block ${cid} does not match its hash`)
      if (cid.equals(root)) {
        decodeRoot(block.bytes)
        sawRoot = true
      }
      batch.push({ cid, bytes: block.bytes })
      blocks++
      if (batch.length >= 512) {
        bytesStored += (await store.putMany(batch, { trusted: true })).bytes
        batch = []
      }
    }
  } catch (err: any) {
    if (err instanceof InvalidCarError || err?.code === 'ERR_INVALID_NODE') throw err
    throw new InvalidCarError(`${path}: malformed CAR (${err?.message})`, { cause: err })
  }
  bytesStored += (await store.putMany(batch, { trusted: true })).bytes
  await store.commit()
  if (!sawRoot && !await store.has(root)) throw new InvalidCarError(`${path}: the root block ${root} is not in the file`)
  return { root, blocks, bytesStored }
}
