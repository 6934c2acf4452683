/**
 * Wire codecs (src/net/exchange/codec.ts): every codec round-trips batches of blocks; a payload that
 * would decode past its bound (a compression bomb, a lying header) and truncated or garbage input
 * fail with ProtocolError, before the decoder allocates the bomb's output.
 */
import { describe, it, expect } from 'vitest'
import { randomBytes } from 'node:crypto'
import { deflateRawSync } from 'node:zlib'
import { DEFLATE_1, NONE, ZSTD_BATCH, MAX_BATCH_BLOCKS, getCodec, localCodecs, maxEncodedSize, negotiate, type Codec } from '../../src/net/exchange/codec.js'
import { ProtocolError } from '../../src/net/exchange/frames.js'
import { MAX_BLOCK_SIZE } from '../../src/dag/node.js'

const MiB = 1024 * 1024
const CODECS: Codec[] = [ZSTD_BATCH, DEFLATE_1, NONE]

/** Text-like blocks sharing most of their content, as consecutive blocks of a disk often do. */
function textBlocks (n: number, size = 16 * 1024): Uint8Array[] {
  const words = ['package', 'version', 'depends', 'libc6', 'amd64', 'debian', 'usr/lib', 'install', '\n', ' ', 'x86_64-linux-gnu']
  let seed = 1
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed }
  return Array.from({ length: n }, () => {
    let s = ''
    while (s.length < size) s += words[rnd() % words.length]! + (rnd() % 7 === 0 ? String(rnd() % 1000) : '')
    return new TextEncoder().encode(s.slice(0, size))
  })
}

function total (blocks: Uint8Array[]): number { return blocks.reduce((n, b) => n + b.length, 0) }

function expectProtocolError (fn: () => unknown): void {
  expect(fn).toThrow(ProtocolError)
}

/** Payload header: method, count, lengths (the format documented at the top of codec.ts). */
function header (method: number, lengths: number[]): Uint8Array {
  const out: number[] = [method]
  const varint = (n: number): void => { while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n >>>= 7 } out.push(n) }
  varint(lengths.length)
  for (const n of lengths) varint(n)
  return Uint8Array.from(out)
}

function concat (...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}

/** A zstd frame header: magic, FHD, window descriptor, optional 4-byte content size. */
function zstdHeader (contentSize: number | undefined, windowLog = 17): Uint8Array {
  const fcs = contentSize === undefined ? [] : [contentSize & 0xff, (contentSize >>> 8) & 0xff, (contentSize >>> 16) & 0xff, contentSize >>> 24]
  return Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, contentSize === undefined ? 0x00 : 0x80, (windowLog - 10) << 3, ...fcs])
}

/** An RLE block regenerating `size` bytes (<= 128 KiB) of `byte`. */
function rleBlock (size: number, byte: number, last: boolean): Uint8Array {
  const h = (size << 3) | (1 << 1) | (last ? 1 : 0)
  return Uint8Array.from([h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff, byte])
}

describe('codec negotiation', () => {
  it('offers zstd-batch first where the native binding loads, and always deflate-1 and none', () => {
    expect(localCodecs()).toEqual(['zstd-batch', 'deflate-1', 'none'])
    expect(getCodec('zstd-batch')).toBe(ZSTD_BATCH)
    expect(getCodec('brotli')).toBeUndefined()
  })

  it('picks the first of ours that the peer lists, else none', () => {
    expect(negotiate(localCodecs(), ['deflate-1', 'zstd-batch']).name).toBe('zstd-batch')
    expect(negotiate(localCodecs(), ['deflate-raw', 'deflate-1']).name).toBe('deflate-1')
    expect(negotiate(localCodecs(), ['deflate-raw']).name).toBe('none')
    expect(negotiate(localCodecs(), []).name).toBe('none')
  })
})

describe.each(CODECS.map(c => [c.name, c] as const))('%s', (_name, codec) => {
  const batches: Record<string, Uint8Array[]> = {
    'one text block': textBlocks(1),
    '32 text blocks': textBlocks(32),
    'random blocks': [randomBytes(16 * 1024), randomBytes(20 * 1024)],
    'zeros, empty and tiny blocks': [new Uint8Array(64 * 1024), new Uint8Array(0), Uint8Array.of(7), new Uint8Array(3000).fill(9)],
    'mixed': [...textBlocks(3), randomBytes(30 * 1024), new Uint8Array(8192), ...textBlocks(2, 5000)],
    'a block of MAX_BLOCK_SIZE': [new Uint8Array(MAX_BLOCK_SIZE).fill(1)],
    'MAX_BATCH_BLOCKS small blocks': Array.from({ length: MAX_BATCH_BLOCKS }, (_, i) => new Uint8Array(100 + (i % 50)).fill(i & 0xff))
  }

  it.each(Object.keys(batches))('round-trips %s, within maxEncodedSize', (key) => {
    const blocks = batches[key]!
    const payload = codec.encode(blocks)
    expect(payload.length).toBeLessThanOrEqual(maxEncodedSize(blocks.map(b => b.length)))
    const out = codec.decode(payload, total(blocks))
    expect(out.length).toBe(blocks.length)
    for (let i = 0; i < blocks.length; i++) expect(Buffer.from(out[i]!).equals(Buffer.from(blocks[i]!))).toBe(true)
  })

  it('rejects a payload declaring more than maxOutputBytes, before decoding', () => {
    const blocks = textBlocks(8)
    const payload = codec.encode(blocks)
    expectProtocolError(() => codec.decode(payload, total(blocks) - 1))
    expect(() => codec.decode(payload, total(blocks) - 1)).toThrow(/over the/)
    expect(() => codec.decode(payload, Number.NaN)).toThrow(RangeError)
  })

  it('rejects every truncation of a payload and trailing bytes with ProtocolError', () => {
    const blocks = [...textBlocks(6), randomBytes(5000)]
    const payload = codec.encode(blocks)
    const cuts = new Set([0, 1, 2, 3, 5, 8, 12, 20, payload.length - 1, payload.length - 2, payload.length - 4, payload.length >> 1])
    for (let i = 0; i < 40; i++) cuts.add(Math.floor(Math.random() * payload.length))
    for (const cut of cuts) expectProtocolError(() => codec.decode(payload.subarray(0, cut), 1 * MiB))
    expectProtocolError(() => codec.decode(concat(payload, Uint8Array.of(0)), 1 * MiB))
  })

  it('rejects garbage with ProtocolError', () => {
    for (let i = 0; i < 200; i++) {
      const garbage = randomBytes(1 + (i % 64) * 37)
      expectProtocolError(() => codec.decode(garbage, 1 * MiB))
    }
  })

  it('never throws anything but ProtocolError on a corrupted payload, and never returns other lengths', () => {
    const blocks = textBlocks(16)
    const payload = codec.encode(blocks)
    for (let i = 0; i < 300; i++) {
      const bad = Uint8Array.from(payload)
      const at = Math.floor(Math.random() * bad.length)
      bad[at] = bad[at]! ^ (1 << (i % 8))
      try {
        const out = codec.decode(bad, total(blocks))
        // A flipped bit inside compressed data may decode to other bytes: the CIDs catch that.
        expect(total(out)).toBeLessThanOrEqual(total(blocks))
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError)
      }
    }
  })

  it('refuses bad batches on encode', () => {
    expect(() => codec.encode([])).toThrow(RangeError)
    expect(() => codec.encode(Array.from({ length: MAX_BATCH_BLOCKS + 1 }, () => new Uint8Array(1)))).toThrow(RangeError)
    expect(() => codec.encode([new Uint8Array(MAX_BLOCK_SIZE + 1)])).toThrow(RangeError)
  })
})

describe('zstd-batch', () => {
  it('compresses a batch as one stream: similar blocks cost less than per block', () => {
    const blocks = textBlocks(32)
    const batch = ZSTD_BATCH.encode(blocks).length
    const perBlock = blocks.reduce((n, b) => n + ZSTD_BATCH.encode([b]).length, 0)
    expect(batch).toBeLessThan(perBlock)
    expect(batch).toBeLessThan(DEFLATE_1.encode(blocks).length)
  })

  it('sends incompressible batches stored (method 0), and deflate-1 / none accept them', () => {
    const blocks = [randomBytes(16 * 1024), randomBytes(16 * 1024)]
    const payload = ZSTD_BATCH.encode(blocks)
    expect(payload[0]).toBe(0)
    expect(payload.length).toBe(maxEncodedSize([16384, 16384]) - 2 * 3)
    for (const c of CODECS) expect(Buffer.concat(c.decode(payload, 32 * 1024)).equals(Buffer.concat(blocks))).toBe(true)
  })

  it('declares the batch size as the frame content size', () => {
    const blocks = textBlocks(4)
    const payload = ZSTD_BATCH.encode(blocks)
    expect(payload[0]).toBe(2)
    const frame = payload.subarray(header(2, blocks.map(b => b.length)).length)
    expect(Array.from(frame.subarray(0, 4))).toEqual([0x28, 0xb5, 0x2f, 0xfd])
    expect(frame[4]! >> 6).toBe(2)
    expect(new DataView(frame.buffer, frame.byteOffset).getUint32(6, true)).toBe(total(blocks))
  })

  it('rejects an RLE bomb (1 GiB from 32 KiB) whose frame lies about its size, without decoding it', () => {
    const blocks: Uint8Array[] = []
    for (let i = 0; i < 8192; i++) blocks.push(rleBlock(128 * 1024, 0, i === 8191))
    const payload = concat(header(2, [1000]), zstdHeader(1000), ...blocks)
    const before = process.memoryUsage().arrayBuffers
    expectProtocolError(() => ZSTD_BATCH.decode(payload, 1 * MiB))
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * MiB)
  })

  it('rejects a real compressed bomb (64 MiB) declared as 16 KiB: the decoder stops at the declared size', () => {
    // Repeated text: zstd makes compressed blocks (not RLE), so the block walk cannot tell; the decoder must.
    const text = textBlocks(1, MAX_BLOCK_SIZE)[0]!
    const big = ZSTD_BATCH.encode(Array.from({ length: 64 }, () => text))
    expect(big[0]).toBe(2)
    expect(big.length).toBeLessThan(2 * MiB)
    const frame = Uint8Array.from(big.subarray(header(2, Array(64).fill(MAX_BLOCK_SIZE)).length))
    new DataView(frame.buffer).setUint32(6, 16384, true)
    const payload = concat(header(2, [16384]), frame)
    const before = process.memoryUsage().arrayBuffers
    expect(() => ZSTD_BATCH.decode(payload, 1 * MiB)).toThrow(/bad zstd frame/)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * MiB)
  })

  it('rejects frames without a content size, with a dictionary, a huge window, two frames, or a reserved block type', () => {
    const ok = concat(zstdHeader(4), rleBlock(4, 1, true))
    expect(Buffer.from(ZSTD_BATCH.decode(concat(header(2, [4]), ok), 4)[0]!)).toEqual(Buffer.from([1, 1, 1, 1]))
    const cases: Array<[Uint8Array, RegExp]> = [
      [concat(zstdHeader(undefined), rleBlock(4, 1, true)), /without a content size/],
      [concat(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x81, 0x38, 1, 4, 0, 0, 0]), rleBlock(4, 1, true)), /dictionary/],
      [concat(zstdHeader(4, 30), rleBlock(4, 1, true)), /window/],
      [concat(ok, ok), /after the zstd frame/],
      [concat(zstdHeader(4), Uint8Array.from([0x27, 0, 0])), /reserved type/],
      [concat(zstdHeader(4), rleBlock(4, 1, false)), /truncated/],
      [concat(Uint8Array.from([0x29, 0xb5, 0x2f, 0xfd]), ok.subarray(4)), /not a zstd frame/]
    ]
    for (const [frame, message] of cases) {
      expect(() => ZSTD_BATCH.decode(concat(header(2, [4]), frame), 1 * MiB)).toThrow(ProtocolError)
      expect(() => ZSTD_BATCH.decode(concat(header(2, [4]), frame), 1 * MiB)).toThrow(message)
    }
  })

  it('refuses a method other than stored and its own', () => {
    const deflated = DEFLATE_1.encode(textBlocks(2))
    expect(deflated[0]).toBe(1)
    expect(() => ZSTD_BATCH.decode(deflated, 1 * MiB)).toThrow(/not negotiated/)
    expect(() => DEFLATE_1.decode(ZSTD_BATCH.encode(textBlocks(2)), 1 * MiB)).toThrow(/not negotiated/)
    expect(() => NONE.decode(deflated, 1 * MiB)).toThrow(ProtocolError)
  })
})

describe('deflate-1', () => {
  it('rejects a DEFLATE bomb (8 MiB of zeros in 8 KiB) declared as one 16 KiB block', () => {
    const bomb = deflateRawSync(new Uint8Array(8 * MiB), { level: 9 })
    const clen = Uint8Array.from([(bomb.length & 0x7f) | 0x80, (bomb.length >>> 7) & 0x7f])
    expect(bomb.length).toBeLessThan(16384)
    expect(bomb.length).toBeGreaterThan(127)
    const payload = concat(header(1, [16384]), clen, bomb)
    const before = process.memoryUsage().arrayBuffers
    expect(() => DEFLATE_1.decode(payload, 1 * MiB)).toThrow(/bad deflate block/)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(4 * MiB)
  })

  it('keeps the per-block rule: incompressible blocks go as they are', () => {
    const blocks = [randomBytes(16 * 1024), ...textBlocks(1)]
    const payload = DEFLATE_1.encode(blocks)
    expect(payload[0]).toBe(1)
    expect(payload.length).toBeLessThan(16 * 1024 + 8 * 1024)
    expect(Buffer.from(DEFLATE_1.decode(payload, 32 * 1024)[0]!).equals(blocks[0]!)).toBe(true)
  })
})
