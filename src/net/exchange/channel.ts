import { FrameDecoder, ProtocolError } from './frames.js'
import { decodeMessage, encodeMessage, type Message } from './messages.js'
import type { Stream } from '@libp2p/interface'

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
 * One libp2p stream of the block protocol: decodes frames from the peer with hard bounds, and sends
 * messages with backpressure. A protocol error from the peer aborts the stream.
 */
export class Channel {
  readonly stream: Stream
  private readonly decoder = new FrameDecoder()
  private sending: Promise<void> = Promise.resolve()
  private queued = 0
  private closed = false
  bytesIn = 0
  bytesOut = 0

  constructor (stream: Stream) {
    this.stream = stream
  }

  /** Reads messages until the stream ends; throws ProtocolError on bad input. */
  async * messages (): AsyncGenerator<Message> {
    for await (const chunk of this.stream) {
      const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      this.bytesIn += bytes.length
      for (const frame of this.decoder.push(bytes)) {
        // Aborted (a ban) while handling an earlier frame of this chunk: deliver nothing more from
        // the peer, or a HAVE behind a bad block would bring it back into a pull.
        if (this.closed) return
        yield decodeMessage(frame)
      }
    }
    if (this.decoder.pending > 0) throw new ProtocolError('stream ended inside a frame')
  }

  /** Queues a message; resolves once it is handed to the stream (waits when the peer is slow). */
  async send (message: Message): Promise<void> {
    if (this.closed) return
    const bytes = encodeMessage(message)
    this.queued += bytes.length
    const previous = this.sending
    const next = (async () => {
      await previous
      if (this.closed) return
      this.bytesOut += bytes.length
      if (!this.stream.send(bytes)) await drained(this.stream)
    })().finally(() => { this.queued -= bytes.length })
    this.sending = next.catch(() => {})
    if (this.queued > MAX_QUEUED) await next
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.sending
    this.closed = true
    await this.stream.close().catch(() => { this.stream.abort(new Error('close failed')) })
  }

  abort (err: Error): void {
    this.closed = true
    this.stream.abort(err)
  }

  get isClosed (): boolean { return this.closed }
}
