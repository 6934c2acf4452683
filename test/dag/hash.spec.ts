import { describe, it, expect } from 'vitest'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as dagCbor from '@ipld/dag-cbor'
import { cborCid, decodeCid, rawCid, verifyBlock } from '../../src/dag/hash.js'
import { decodeDagCbor } from '../../src/dag/cbor.js'

describe('decodeCid', () => {
  it('gives what CID.decode gives, for our CIDs without a copy, for any other CID through CID.decode', async () => {
    const leaf = rawCid(new Uint8Array([1, 2, 3]))
    const node = cborCid(new Uint8Array([0xa0]))
    for (const cid of [leaf, node]) {
      // A view inside a larger buffer, as a frame's CID is.
      const frame = new Uint8Array(cid.bytes.length + 10)
      frame.set(cid.bytes, 5)
      const view = frame.subarray(5, 5 + cid.bytes.length)
      const decoded = decodeCid(view)
      expect(decoded.equals(CID.decode(view))).toBe(true)
      expect(decoded.toString()).toBe(cid.toString())
      expect(decoded.bytes.buffer).toBe(frame.buffer)
    }
    const other = CID.createV1(0x55, await sha256.digest(new Uint8Array([1])))
    expect(decodeCid(other.bytes).equals(other)).toBe(true)
    expect(() => decodeCid(leaf.bytes.subarray(0, 20))).toThrow()
  })
})

describe('decodeDagCbor', () => {
  it('decodes what dagCbor.decode decodes, and refuses what it refuses', () => {
    const links = Array.from({ length: 5 }, (_, i) => [rawCid(new Uint8Array([i])), 1000 + i])
    const bytes = dagCbor.encode({ links, note: 'x', n: 7 })
    const ours = decodeDagCbor(bytes) as { links: Array<[CID, number]> }
    expect(ours).toEqual(dagCbor.decode(bytes))
    expect(ours.links[3]![0].equals(links[3]![0] as CID)).toBe(true)
    const bad = [
      // tag 42 whose bytes lack the leading 0x00
      new Uint8Array([0xd8, 0x2a, 0x45, 0x01, 0x55, 0x1e, 0x20, 0x00]),
      // indefinite-length map, NaN, a duplicate key: not dag-cbor
      new Uint8Array([0xbf, 0x61, 0x61, 0x01, 0xff]),
      new Uint8Array([0xf9, 0x7e, 0x00]),
      new Uint8Array([0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02])
    ]
    for (const b of bad) {
      expect(() => dagCbor.decode(b)).toThrow()
      expect(() => decodeDagCbor(b)).toThrow()
    }
  })
})

describe('verifyBlock', () => {
  it('accepts exactly the bytes a CID names: any flipped bit, a cut byte, another hash or a short digest is refused', async () => {
    const bytes = new Uint8Array(20_000).map((_, i) => (i * 31 + 7) & 0xff)
    const cid = rawCid(bytes)
    expect(verifyBlock(cid, bytes)).toBe(true)
    // Views inside larger buffers (a block inside a frame; a CID inside a node), as on the wire.
    const frame = new Uint8Array(bytes.length + 9)
    frame.set(bytes, 4)
    const cidFrame = new Uint8Array(cid.bytes.length + 3)
    cidFrame.set(cid.bytes, 1)
    expect(verifyBlock(decodeCid(cidFrame.subarray(1, 1 + cid.bytes.length)), frame.subarray(4, 4 + bytes.length))).toBe(true)
    for (const at of [0, 1, 4095, 4096, 19_999]) {
      for (const bit of [0, 7]) {
        const bad = bytes.slice()
        bad[at]! ^= 1 << bit
        expect(verifyBlock(cid, bad)).toBe(false)
      }
    }
    expect(verifyBlock(cid, bytes.subarray(0, bytes.length - 1))).toBe(false)
    expect(verifyBlock(rawCid(new Uint8Array(0)), new Uint8Array(0))).toBe(true)
    expect(verifyBlock(rawCid(new Uint8Array(0)), new Uint8Array(1))).toBe(false)
    // The same bytes under SHA-256: never accepted (BLAKE3 is the only hash we take).
    expect(verifyBlock(CID.createV1(0x55, await sha256.digest(bytes)), bytes)).toBe(false)
    // A BLAKE3 multihash cut to 16 bytes whose digest is the start of the right one.
    const short = CID.decode(Uint8Array.from([1, 0x55, 0x1e, 16, ...cid.multihash.digest.subarray(0, 16)]))
    expect(verifyBlock(short, bytes)).toBe(false)
  })
})
