import { FrameDecoder, ProtocolError } from './frames.js'
import { decodeMessage, encodeMessageParts, type Message, type OutMessage } from './messages.js'
import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** Bytes a channel may queue for sending before `send` waits for the stream to drain. */
const MAX_QUEUED = 8 * 1024 * 1024

/**
 * Waits until the stream takes more bytes (or closes). Not `stream.onDrain()`: in @libp2p/utils 7.4
 * its promise is created once and never reset, so after the stream's first drain it resolves at
 * once, and a peer that stops reading (no more yamux window) has every block we send piled up in
 * the stream's write buffer, which has no limit. A seeder's memory would then grow as fast as the
 * peer can send WANTs.
 */
async function drained (stream: Stream): Promise<void> {
  while (stream.writableNeedsDrain && stream.status === 'open') {
    await new Promise<void>(resolve => {
      const done = (): void => {
        stream.removeEventListener('drain', done)
        stream.removeEventListener('close', done)
        resolve()
      }
      stream.addEventListener('drain', done)
      stream.addEventListener('close', done)
    })
  }
}

/**
 * Frames queued within one turn of the event loop are handed to the stream together, up to this many
 * bytes per `stream.send`. Every send becomes at least one yamux frame, one noise message and one
 * socket write, and the receiver answers every yamux data frame with a window update: sending 16 KiB
 * blocks one by one costs the receiver a syscall per block (measured: its main cost on loopback).
 */
export const COALESCE = 256 * 1024

/**
 * One libp2p stream of the block protocol: decodes frames from the peer with hard bounds, and sends
 * messages with backpressure, coalesced into large writes. A protocol error from the peer aborts
 * the stream.
 */
export class Channel {
  readonly stream: Stream
  private readonly decoder = new FrameDecoder()
  /** Encoded frames not yet handed to the stream, in order. */
  private out: Uint8Array[] = []
  private outBytes = 0
  private flushScheduled = false
  /** The stream refused more (its peer's window is full): nothing more is handed to it until it drains. */
  private blocked?: Promise<void>
  private closed = false
  bytesIn = 0
  bytesOut = 0

  constructor (stream: Stream) {
    this.stream = stream
  }

  /**
   * Calls `handle` for each message until the stream ends; throws ProtocolError on bad input. Frames
   * of one chunk are handled synchronously (no promise per frame, as an async generator costs); a handler
   * that returns a promise is awaited before the next frame.
   */
  async each (handle: (message: Message) => void | Promise<void>): Promise<void> {
    for await (const chunk of this.stream) {
      for (const bytes of chunk instanceof Uint8Array ? [chunk] : chunk) {
        this.bytesIn += bytes.length
        for (const frame of this.decoder.push(bytes)) {
          if (this.closed) return
          const pending = handle(decodeMessage(frame))
          if (pending != null) await pending
        }
      }
    }
    if (this.decoder.pending > 0) throw new ProtocolError('stream ended inside a frame')
  }

  /**
   * Queues a message. It is handed to the stream at the end of this turn of the event loop, with the
   * others queued in it (or at once when COALESCE bytes are waiting). Resolves at once while fewer
   * than MAX_QUEUED bytes wait; otherwise once the stream has taken them (the peer reads slowly).
   */
  async send (message: OutMessage): Promise<void> {
    if (this.closed) return
    for (const part of encodeMessageParts(message)) {
      this.out.push(part)
      this.outBytes += part.length
    }
    if (this.outBytes >= COALESCE) this.flush()
    else if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => {
        this.flushScheduled = false
        this.flush()
      })
    }
    while (this.outBytes > MAX_QUEUED && this.blocked != null && !this.closed) await this.blocked
  }

  /** Hands the queued frames to the stream, unless it is waiting for the peer to read. */
  private flush (): void {
    while (this.blocked == null && this.outBytes > 0 && !this.closed) {
      let take = 0
      let bytes = 0
      // Up to and including the part that reaches COALESCE: stopping short of it left that part (a
      // block, as `send` flushes when one crosses the mark) to go alone, one write in two.
      while (take < this.out.length && bytes < COALESCE) bytes += this.out[take++]!.length
      const parts = this.out.splice(0, take)
      this.outBytes -= bytes
      this.bytesOut += bytes
      let accepted: boolean
      try {
        // A list, not a copy: the stream queues its buffers, yamux frames views of them, and noise
        // encrypts them piece by piece (a Buffer.concat here copied every byte sent once more).
        accepted = this.stream.send(parts.length === 1 ? parts[0]! : new Uint8ArrayList(...parts))
      } catch (err) {
        this.abort(err as Error)
        return
      }
      if (!accepted) {
        this.blocked = drained(this.stream).then(() => {
          this.blocked = undefined
          this.flush()
        })
      }
    }
  }

  /** Sends what is queued, then half-closes the stream. */
  async close (): Promise<void> {
    if (this.closed) return
    this.flush()
    while (this.blocked != null && !this.closed && this.stream.status === 'open') await this.blocked
    this.closed = true
    await this.stream.close().catch(() => { this.stream.abort(new Error('close failed')) })
  }

  abort (err: Error): void {
    this.closed = true
    this.out = []
    this.outBytes = 0
    this.stream.abort(err)
  }

  get isClosed (): boolean { return this.closed }
}
