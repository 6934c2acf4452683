import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ChunkEngine, type ChunkBatch } from './chunker/engine.js'
import type { ChunkerParams } from './chunker/interface.js'
import type { ChunkReply, ChunkRequest, ChunkWorkerData } from './chunk-worker.js'

/**
 * Where the import chunks and hashes: a ring of slots the main thread reads segments into, and an
 * engine that turns each segment into chunks, in segment order. `run` may be called for the next
 * segment before the previous one is answered.
 */
export interface ChunkStage {
  readonly slots: Uint8Array[]
  readonly engine: ChunkEngine
  /** False when the caller must hash the data chunks of each batch (hashBatch). */
  readonly hashes: boolean
  run(k: number, slot: number): Promise<ChunkBatch>
  close(): Promise<void>
}

/** The compiled worker script, or undefined when running from sources (tests): then chunk inline. */
export function chunkWorkerScript (): URL | undefined {
  const url = new URL('./chunk-worker.js', import.meta.url)
  return url.protocol === 'file:' && existsSync(fileURLToPath(url)) ? url : undefined
}

/** Chunks on the calling thread (small images, or no worker script). */
export class InlineStage implements ChunkStage {
  readonly slots: Uint8Array[]
  readonly engine: ChunkEngine
  readonly hashes = true

  constructor (params: ChunkerParams, size: number, segment: number, slots: number) {
    this.engine = new ChunkEngine(params, size, segment)
    const bytes = Math.min(segment + this.engine.lookahead, size)
    this.slots = Array.from({ length: slots }, () => new Uint8Array(bytes))
  }

  async run (k: number, slot: number): Promise<ChunkBatch> {
    return this.engine.run(k, this.slots[slot]!)
  }

  async close (): Promise<void> {}
}

/**
 * Chunks on a worker thread. The slots are SharedArrayBuffers: the worker reads the bytes the main
 * thread read, and the main thread writes new blocks to the pack straight from them.
 */
export class WorkerStage implements ChunkStage {
  readonly slots: Uint8Array[]
  /** The same engine geometry the worker uses (its state stays unused here). */
  readonly engine: ChunkEngine
  /** Whether the worker hashes the chunks it answers with. */
  readonly hashes: boolean
  private readonly worker: Worker
  private readonly waiting = new Map<number, { resolve: (batch: ChunkBatch) => void, reject: (err: Error) => void }>()
  private failure?: Error

  constructor (params: ChunkerParams, size: number, segment: number, slots: number, script: URL, options: { hash: boolean }) {
    this.engine = new ChunkEngine(params, size, segment)
    this.hashes = options.hash
    const bytes = Math.min(segment + this.engine.lookahead, size)
    const shared = Array.from({ length: slots }, () => new SharedArrayBuffer(bytes))
    this.slots = shared.map(s => new Uint8Array(s))
    const workerData: ChunkWorkerData = { params, size, segment, slots: shared, hash: options.hash }
    this.worker = new Worker(script, { workerData })
    this.worker.on('message', (reply: ChunkReply) => {
      const waiter = this.waiting.get(reply.k)
      this.waiting.delete(reply.k)
      if ('error' in reply) waiter?.reject(new Error(`chunk worker: ${reply.error}`))
      else waiter?.resolve({ count: reply.count, buffer: reply.buffer })
    })
    this.worker.on('error', err => { this.fail(err) })
    this.worker.on('exit', code => { this.fail(new Error(`chunk worker exited (code ${code})`)) })
  }

  private fail (err: Error): void {
    this.failure ??= err
    for (const waiter of this.waiting.values()) waiter.reject(this.failure)
    this.waiting.clear()
  }

  async run (k: number, slot: number): Promise<ChunkBatch> {
    return await new Promise((resolve, reject) => {
      if (this.failure != null) {
        reject(this.failure)
        return
      }
      this.waiting.set(k, { resolve, reject })
      const request: ChunkRequest = { k, slot }
      this.worker.postMessage(request)
    })
  }

  async close (): Promise<void> {
    this.failure ??= new Error('chunk worker closed')
    await this.worker.terminate()
  }
}
