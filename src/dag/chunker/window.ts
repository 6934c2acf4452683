import type { ImageSource } from '../source/interface.js'

/** Bytes read from the image per call; large enough to amortise the thread-pool round trip. */
export const READ_SIZE = 8 * 1024 * 1024

/**
 * A sliding view over an image that always holds at least `lookahead` bytes ahead of the position a
 * chunker asks for, reading the next segment in the background while the current one is chunked.
 *
 * Each segment is read into a buffer with `lookahead` bytes of headroom in front, so the tail of the
 * previous segment is copied in front of it (a few KiB) instead of concatenating megabytes. Two
 * buffers alternate: fresh 8 MiB allocations cost a page fault per 4 KiB and cut reading from the
 * page cache from ~9 GiB/s to ~450 MiB/s. So a view returned by `at` is valid only until the next
 * call that moves the window (chunk bytes: until the chunker is resumed).
 */
export class ImageWindow {
  readonly size: number
  private readonly source: ImageSource
  private readonly lookahead: number
  /** Bytes of the current view; `buf[0]` is image offset `base`. */
  private buf: Uint8Array = new Uint8Array(0)
  private base = 0
  private nextRead = 0
  private pending?: Promise<{ buffer: Uint8Array, position: number, length: number }>
  /** The buffer not currently viewed: the next read goes into it. */
  private spare: Uint8Array
  private current: Uint8Array

  constructor (source: ImageSource, lookahead: number) {
    this.source = source
    this.size = source.size
    this.lookahead = lookahead
    const bufferSize = lookahead + Math.min(READ_SIZE, source.size)
    this.spare = new Uint8Array(bufferSize)
    this.current = new Uint8Array(bufferSize)
    this.startRead()
  }

  private startRead (): void {
    if (this.nextRead >= this.size) {
      this.pending = undefined
      return
    }
    const position = this.nextRead
    const length = Math.min(READ_SIZE, this.size - position)
    this.nextRead += length
    const buffer = this.spare
    this.pending = this.source.read(buffer.subarray(this.lookahead), length, position)
      .then(() => ({ buffer, position, length }))
    // Surface the error when awaited, not as an unhandled rejection.
    this.pending.catch(() => {})
  }

  /**
   * Makes image bytes [position, position + length) addressable (clipped at the end of the image)
   * and returns the buffer holding them with the index of `position` in it.
   */
  async at (position: number, length: number): Promise<{ buf: Uint8Array, index: number, available: number }> {
    const end = Math.min(position + length, this.size)
    while (this.base + this.buf.length < end) {
      if (this.pending == null) throw new Error(`read past the end of the image at ${end}`)
      const next = await this.pending
      const keepFrom = Math.max(position, this.base)
      const tail = this.buf.subarray(keepFrom - this.base)
      if (tail.length > this.lookahead) throw new Error('window lookahead exceeded')
      const start = this.lookahead - tail.length
      next.buffer.set(tail, start)
      this.buf = next.buffer.subarray(start, this.lookahead + next.length)
      this.base = next.position - tail.length
      this.spare = this.current
      this.current = next.buffer
      this.startRead()
    }
    const index = position - this.base
    return { buf: this.buf, index, available: this.base + this.buf.length - position }
  }
}
