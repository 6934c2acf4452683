/** A fixed-size set of leaf indices, one bit each, most significant bit first (BitTorrent's order). */
export class Bitfield {
  readonly size: number
  readonly bytes: Uint8Array
  private ones = 0

  constructor (size: number, bytes?: Uint8Array) {
    this.size = size
    this.bytes = bytes != null ? bytes.slice() : new Uint8Array(Math.ceil(size / 8))
    if (bytes != null) {
      // Bits past `size` in the last byte must be zero; clear them rather than trust the peer.
      const extra = this.bytes.length * 8 - size
      if (extra > 0) this.bytes[this.bytes.length - 1]! &= (0xff << extra) & 0xff
      for (const b of this.bytes) this.ones += popcount(b)
    }
  }

  has (i: number): boolean {
    return i >= 0 && i < this.size && (this.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0
  }

  set (i: number): boolean {
    if (i < 0 || i >= this.size || this.has(i)) return false
    this.bytes[i >> 3]! |= 0x80 >> (i & 7)
    this.ones++
    return true
  }

  get count (): number { return this.ones }
  get full (): boolean { return this.ones === this.size }
}

function popcount (b: number): number {
  let n = 0
  for (; b !== 0; b &= b - 1) n++
  return n
}
