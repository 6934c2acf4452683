import { FrameDecoder, ProtocolError } from './frames.js'
import { decodeMessage, encodeMessage, type Message } from './messages.js'
import type { Stream } from '@libp2p/interface'

/** Bytes a channel may queue for sending before `send` waits for the stream to drain. */
const MAX_QUEUED = 8 * 1024 * 1024

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
      for (const frame of this.decoder.push(bytes)) yield decodeMessage(frame)
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
      if (!this.stream.send(bytes)) await this.stream.onDrain()
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
