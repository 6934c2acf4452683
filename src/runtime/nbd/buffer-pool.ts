/**
 * Reply buffers used again once the socket has taken them. A fresh 256 KiB buffer per READ costs
 * page faults and, at GiB/s, a garbage collection every few milliseconds (external memory); a few
 * dozen buffers in rotation cost neither.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>()
  private bytes = 0
  private readonly maxBytes: number

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** The capacity handed out for `size` bytes: powers of two up to 64 KiB, then multiples of 64 KiB. */
  static capacity (size: number): number {
    if (size <= 4096) return 4096
    if (size <= 65536) return 2 ** Math.ceil(Math.log2(size))
    return Math.ceil(size / 65536) * 65536
  }

  /** A buffer of at least `size` bytes (its contents are garbage). */
  take (size: number): Buffer {
    const capacity = BufferPool.capacity(size)
    const buf = this.free.get(capacity)?.pop()
    if (buf != null) {
      this.bytes -= capacity
      return buf
    }
    return Buffer.allocUnsafeSlow(capacity)
  }

  /** Gives back a buffer from `take` that nothing reads or writes any more. */
  give (buf: Buffer): void {
    const capacity = buf.length
    if (this.bytes + capacity > this.maxBytes || BufferPool.capacity(capacity) !== capacity) return
    let list = this.free.get(capacity)
    if (list == null) this.free.set(capacity, list = [])
    list.push(buf)
    this.bytes += capacity
  }
}
