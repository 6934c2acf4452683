/**
 * The import's chunking thread: runs a ChunkEngine over the slots the main thread fills (shared
 * memory, never copied) and answers each segment with its chunks, in order (with their leaf CIDs
 * if asked to hash; the importer hashes on the main thread, which is otherwise the idler one).
 */
import { parentPort, workerData } from 'node:worker_threads'
import { ChunkEngine } from './chunker/engine.js'
import type { ChunkerParams } from './chunker/interface.js'

export interface ChunkWorkerData {
  params: ChunkerParams
  size: number
  segment: number
  slots: SharedArrayBuffer[]
  /** Whether the worker hashes the chunks (or leaves that to the main thread). */
  hash: boolean
}

/** Main -> worker: chunk segment `k`, which is in slot `slot`. */
export interface ChunkRequest { k: number, slot: number }
/** Worker -> main: the chunks of segment `k`, or why it failed. */
export type ChunkReply = { k: number, count: number, buffer: ArrayBuffer } | { k: number, error: string }

const data = workerData as ChunkWorkerData
const engine = new ChunkEngine(data.params, data.size, data.segment, { hash: data.hash })
const slots = data.slots.map(s => new Uint8Array(s))
const port = parentPort!

port.on('message', ({ k, slot }: ChunkRequest) => {
  let reply: ChunkReply
  try {
    const batch = engine.run(k, slots[slot]!)
    reply = { k, count: batch.count, buffer: batch.buffer }
    port.postMessage(reply, [batch.buffer])
  } catch (err: any) {
    reply = { k, error: String(err?.stack ?? err) }
    port.postMessage(reply)
  }
})
