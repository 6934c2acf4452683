import { describe, it, expect } from 'vitest'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { cborCid, decodeCid, rawCid } from '../../src/dag/hash.js'

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
