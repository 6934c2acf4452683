/**
 * Disk nodes are read by a hand-written reader of their canonical DAG-CBOR (src/dag/cbor.ts
 * `readCanonicalNode`), with cborg's generic decoder for anything else: every node must read as the
 * generic decoder reads it, and every changed or cut node must be read the same way or refused.
 */
import { describe, it, expect } from 'vitest'
import { CID } from 'multiformats/cid'
import { decodeDagCbor, readCanonicalNode } from '../../src/dag/cbor.js'
import { decodeLeafLinks, decodeNode, encodeNode, type Link } from '../../src/dag/node.js'
import { InvalidNodeError } from '../../src/errors.js'
import { cborCid, rawCid } from '../../src/dag/hash.js'
import { pseudoRandom } from '../helpers/images.js'

/** CIDs as strings: comparable with toEqual whatever object holds them. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => (CID.asCID(x) != null ? x.toString() : x)))

/** What `decodeLeafLinks` found, as links (the CIDs made from the offsets it gave), for comparison. */
function leafLinks (bytes: Uint8Array, found: { cidAt: Int32Array, lengths: number[] }): unknown {
  return plain({ links: found.lengths.map((n, k) => [found.cidAt[k]! < 0 ? null : CID.decode(bytes.slice(found.cidAt[k], found.cidAt[k]! + 36)), n]) })
}

function links (n: number, lengthOf: (i: number) => number): Link[] {
  return Array.from({ length: n }, (_, i) => [i % 7 === 3 ? null : rawCid(pseudoRandom(`n-${i}`, 64)), lengthOf(i)])
}

describe('disk nodes in canonical DAG-CBOR', () => {
  it('reads every node as the generic decoder does (holes, every length form)', () => {
    for (const node of [
      { links: links(1, () => 5) },
      { links: links(23, i => 1 + i) },
      { links: links(24, i => 23 + i) },
      { links: links(300, i => [24, 255, 256, 65535, 65536, 1048576][i % 6]!) }
    ]) {
      const { bytes } = encodeNode(node)
      const fast = readCanonicalNode(bytes)
      expect(fast).toBeDefined()
      expect(plain(fast)).toEqual(plain(decodeDagCbor(bytes)))
      const total = node.links.reduce((n, [, len]) => n + len, 0)
      expect(plain(decodeNode(bytes, 1, total))).toEqual(plain(node))
      // A pull lists a bottom node's leaves from their offsets: the same leaves.
      expect(leafLinks(bytes, decodeLeafLinks(bytes, total)!)).toEqual(plain(node))
    }
  })

  it('refuses bottom nodes decodeNode refuses, without allocating for a count the node cannot hold', () => {
    const node = { links: links(8, i => 100 + i) }
    const total = node.links.reduce((n, [, len]) => n + len, 0)
    const { bytes } = encodeNode(node)
    expect(() => decodeLeafLinks(bytes, total + 1)).toThrow(/do not add up/)
    const interior = { links: [[cborCid(Uint8Array.of(1)), 10]] as Link[] }
    expect(() => decodeLeafLinks(encodeNode(interior).bytes, 10)).toThrow(/codec 0x71, expected 0x55/)
    expect(() => decodeNode(encodeNode(interior).bytes, 1, 10)).toThrow(InvalidNodeError)
    expect(() => decodeLeafLinks(encodeNode({ links: [[rawCid(Uint8Array.of(1)), 2 * 1024 * 1024]] }).bytes, 2 * 1024 * 1024)).toThrow(/block limit/)
    // {links: [...]} whose array head claims 2^31 links, in 12 bytes: not canonical for this reader.
    const huge = Uint8Array.of(0xa1, 0x65, 0x6c, 0x69, 0x6e, 0x6b, 0x73, 0x9a, 0x80, 0, 0, 0)
    expect(decodeLeafLinks(huge, 1)).toBeUndefined()
    expect(() => decodeNode(huge, 1, 1)).toThrow(InvalidNodeError)
  })

  it('leaves lengths of 2^32 and more, and other maps, to the generic decoder', () => {
    const big = { links: [[null, 2 ** 32], [null, 2 ** 33 + 5]] as Link[] }
    const { bytes } = encodeNode(big)
    expect(readCanonicalNode(bytes)).toBeUndefined()
    expect(plain(decodeNode(bytes, 2, 2 ** 32 + 2 ** 33 + 5))).toEqual(plain(big))
    expect(readCanonicalNode(encodeNode({ links: links(3, () => 9), extra: 1 } as any).bytes)).toBeUndefined()
  })

  it('a changed or cut node is read as the generic decoder reads it, or refused', () => {
    const node = { links: links(16, i => 1000 + i * 37) }
    const { bytes } = encodeNode(node)
    const total = node.links.reduce((n, [, len]) => n + len, 0)
    const check = (b: Uint8Array): void => {
      const fast = readCanonicalNode(b)
      let generic: unknown
      try { generic = decodeDagCbor(b) } catch { generic = undefined }
      // What the fast reader accepts, the generic decoder reads the same way.
      if (fast !== undefined) expect(plain(fast)).toEqual(plain(generic))
      // decodeNode: a node equal to the generic reading, or InvalidNodeError.
      let node: unknown
      try {
        node = plain(decodeNode(b, 1, total))
        expect(node).toEqual(plain({ links: (generic as { links: unknown }).links }))
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidNodeError)
      }
      // decodeLeafLinks: decodeNode's leaves, its refusal, or undefined (then decodeNode decides).
      let leaves: unknown
      try {
        const found = decodeLeafLinks(b, total)
        leaves = found == null ? undefined : leafLinks(b, found)
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidNodeError)
        expect(node).toBeUndefined()
        return
      }
      if (leaves !== undefined) expect(leaves).toEqual(node)
    }
    for (let cut = 0; cut < bytes.length; cut += 3) check(bytes.subarray(0, cut))
    for (let at = 0; at < bytes.length; at++) {
      for (const x of [0x00, 0x17, 0x18, 0x19, 0xf6, 0x82, bytes[at]! ^ 0x01]) {
        const b = bytes.slice()
        b[at] = x
        check(b)
      }
    }
  })
})
