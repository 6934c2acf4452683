import { describe, it, expect } from 'vitest'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as dagCbor from '@ipld/dag-cbor'
import { cborCid, decodeCid, rawCid } from '../../src/dag/hash.js'
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
