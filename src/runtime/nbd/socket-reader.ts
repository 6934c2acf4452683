import type { Socket } from 'node:net'

/** The peer closed the connection (or it broke) before sending what was being read. */
export class ConnectionClosedError extends Error {
  override readonly name = 'ConnectionClosedError'
}

/**
 * Reads exact byte counts from a socket: `await reader.read(28)`. Chunks are queued as they arrive
 * and the socket is paused while more than `highWater` bytes wait, so a client that floods us is
 * held back by TCP/unix flow control instead of our memory.
 */
export class SocketReader {
  private readonly socket: Socket
  private readonly highWater: number
  private chunks: Buffer[] = []
  private buffered = 0
  private ended = false
  private failure?: Error
  private wake?: () => void

  constructor (socket: Socket, highWater: number) {
    this.socket = socket
    this.highWater = highWater
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      if (this.buffered > this.highWater) socket.pause()
      this.notify()
    })
    socket.on('end', () => { this.ended = true; this.notify() })
    socket.on('close', () => { this.ended = true; this.notify() })
    socket.on('error', err => { this.failure = err; this.notify() })
  }

  private notify (): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  /** Resolves with exactly `length` bytes, or rejects with ConnectionClosedError. */
  async read (length: number): Promise<Buffer> {
    while (this.buffered < length) {
      if (this.failure != null) throw new ConnectionClosedError(`connection failed: ${this.failure.message}`)
      if (this.ended || this.socket.destroyed) throw new ConnectionClosedError('connection closed by the client')
      if (this.socket.isPaused()) this.socket.resume()
      await new Promise<void>(resolve => { this.wake = resolve })
    }
    return this.take(length)
  }

  /** Exactly `length` bytes if they are here already, else undefined (then `read`). */
  tryRead (length: number): Buffer | undefined {
    return this.buffered >= length ? this.take(length) : undefined
  }

  private take (length: number): Buffer {
    let out: Buffer
    const first = this.chunks[0]!
    if (first.length >= length) {
      out = first.subarray(0, length)
      if (first.length === length) this.chunks.shift()
      else this.chunks[0] = first.subarray(length)
    } else {
      out = Buffer.allocUnsafe(length)
      let at = 0
      while (at < length) {
        const chunk = this.chunks[0]!
        const n = Math.min(chunk.length, length - at)
        chunk.copy(out, at, 0, n)
        at += n
        if (n === chunk.length) this.chunks.shift()
        else this.chunks[0] = chunk.subarray(n)
      }
    }
    this.buffered -= length
    if (this.buffered <= this.highWater && this.socket.isPaused() && !this.socket.destroyed) this.socket.resume()
    return out
  }

  /** Reads and drops `length` bytes (the payload of a request we refuse), a piece at a time. */
  async skip (length: number): Promise<void> {
    let left = length
    while (left > 0) {
      const n = Math.min(left, Math.max(1, this.buffered), this.highWater)
      await this.read(n)
      left -= n
    }
  }
}
