import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { BLAKE3_CODE, DAG_CBOR_CODE, RAW_CODE, cborCid } from './hash.js'
import { InvalidNodeError } from '../errors.js'
import { decodeDagCbor, readCanonicalLinks, readCanonicalNode } from './cbor.js'
import type { ChunkerParams } from './chunker/interface.js'

/** No block (leaf or node) is ever larger than this; peers and decoders refuse bigger ones. */
export const MAX_BLOCK_SIZE = 1024 * 1024
/** Default number of level-(k-1) slots a level-k node spans. */
export const DEFAULT_FANOUT = 128
export const MAX_FANOUT = 1024
export const DISK_FORMAT = 'collective-disk'
export const DISK_FORMAT_VERSION = 1

/** A child: its CID and byte length, or `null` for a run of zeros that has no block. */
export type Link = [cid: CID | null, length: number]

/** An interior node: links in byte order. */
export interface DiskNode {
  links: Link[]
}

/**
 * The root of a disk DAG. It spans the whole image. `height` is the number of levels below it:
 * at height 1 its links are raw leaves; at height h, links are nodes of height h-1.
 */
export interface DiskRoot extends DiskNode {
  format: typeof DISK_FORMAT
  version: typeof DISK_FORMAT_VERSION
  size: number
  chunker: ChunkerParams
  fanout: number
  height: number
}

/** The byte span of one node at `level` (1 = the level whose links are leaves). */
export function levelSpan (params: ChunkerParams, fanout: number, level: number): number {
  return params.size * fanout ** level
}

/** The height a root needs so that one node of that level spans the image. */
export function heightFor (size: number, params: ChunkerParams, fanout: number): number {
  let height = 1
  while (levelSpan(params, fanout, height) < size) height++
  return height
}

export function encodeNode (node: DiskNode | DiskRoot): { cid: CID, bytes: Uint8Array } {
  const bytes = dagCbor.encode(node)
  if (bytes.length > MAX_BLOCK_SIZE) throw new InvalidNodeError(`node of ${bytes.length} bytes exceeds ${MAX_BLOCK_SIZE}`)
  return { cid: cborCid(bytes), bytes }
}

function fail (what: string): never {
  throw new InvalidNodeError(`invalid disk node: ${what}`)
}

function decodeLinks (value: unknown, childCodec: number): Link[] {
  if (!Array.isArray(value)) fail('links is not a list')
  if (value.length === 0) fail('links is empty')
  const links: Link[] = []
  for (const link of value) {
    if (!Array.isArray(link) || link.length !== 2) fail('a link is not a [cid, length] pair')
    const [cid, length] = link as [unknown, unknown]
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length <= 0) fail('a link length is not a positive integer')
    if (cid === null) {
      links.push([null, length])
      continue
    }
    const c = CID.asCID(cid)
    if (c == null) fail('a link is not a CID')
    if (c.version !== 1 || c.multihash.code !== BLAKE3_CODE || c.multihash.size !== 32) fail('a link is not a BLAKE3 CIDv1')
    if (c.code !== childCodec) fail(`a link has codec 0x${c.code.toString(16)}, expected 0x${childCodec.toString(16)}`)
    if (childCodec === RAW_CODE && length > MAX_BLOCK_SIZE) fail('a leaf is larger than the block limit')
    links.push([c, length])
  }
  return links
}

/** Decodes and checks a root block; untrusted input (it may come from a peer). */
export function decodeRoot (bytes: Uint8Array): DiskRoot {
  if (bytes.length > MAX_BLOCK_SIZE) fail('larger than the block limit')
  let value: any
  try {
    value = decodeDagCbor(bytes)
  } catch (err) {
    fail(`not dag-cbor (${(err as Error).message})`)
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value)) fail('not a map')
  if (value.format !== DISK_FORMAT) fail('not a collective-disk root')
  if (value.version !== DISK_FORMAT_VERSION) fail(`unsupported version ${value.version}`)
  const { size, fanout, height, chunker } = value
  if (!Number.isSafeInteger(size) || size <= 0) fail('size is not a positive integer')
  if (!Number.isSafeInteger(fanout) || fanout < 2 || fanout > MAX_FANOUT) fail('fanout out of range')
  if (chunker == null || (chunker.kind !== 'fixed' && chunker.kind !== 'fastcdc') ||
    !Number.isSafeInteger(chunker.size) || chunker.size < 4096 || chunker.size > MAX_BLOCK_SIZE) fail('bad chunker parameters')
  if (!Number.isSafeInteger(height) || height < 1 || height !== heightFor(size, chunker, fanout)) fail('height does not match size')
  const links = decodeLinks(value.links, height === 1 ? RAW_CODE : DAG_CBOR_CODE)
  if (links.reduce((sum, [, n]) => sum + n, 0) !== size) fail('link lengths do not add up to the size')
  return { format: DISK_FORMAT, version: DISK_FORMAT_VERSION, size, chunker: { kind: chunker.kind, size: chunker.size }, fanout, height, links }
}

/**
 * A bottom node's (level 1) links with `decodeNode`'s checks, without CID objects: where each leaf's
 * 36 CID bytes start in `bytes` (-1 for a hole) and its length. Undefined when the node is not in
 * the canonical form (`decodeNode` then reads it, or says what is wrong).
 */
export function decodeLeafLinks (bytes: Uint8Array, length: number): { cidAt: Int32Array, lengths: number[] } | undefined {
  if (bytes.length > MAX_BLOCK_SIZE) fail('larger than the block limit')
  const found = readCanonicalLinks(bytes)
  if (found == null) return undefined
  const { cidAt, lengths } = found
  if (lengths.length === 0) fail('links is empty')
  let sum = 0
  for (let k = 0; k < lengths.length; k++) {
    const n = lengths[k]!
    if (n <= 0) fail('a link length is not a positive integer')
    if (cidAt[k]! >= 0) {
      if (bytes[cidAt[k]! + 1] !== RAW_CODE) fail(`a link has codec 0x${bytes[cidAt[k]! + 1]!.toString(16)}, expected 0x${RAW_CODE.toString(16)}`)
      if (n > MAX_BLOCK_SIZE) fail('a leaf is larger than the block limit')
    }
    sum += n
  }
  if (sum !== length) fail('link lengths do not add up to the parent link length')
  return found
}

/**
 * Decodes and checks an interior node found at `level` below a root (level 1 links to leaves) that
 * its parent says spans `length` bytes.
 */
export function decodeNode (bytes: Uint8Array, level: number, length: number): DiskNode {
  if (bytes.length > MAX_BLOCK_SIZE) fail('larger than the block limit')
  let value: any = readCanonicalNode(bytes)
  if (value == null) {
    try {
      value = decodeDagCbor(bytes)
    } catch (err) {
      fail(`not dag-cbor (${(err as Error).message})`)
    }
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value) || Object.keys(value).length !== 1) fail('not a {links} map')
  const links = decodeLinks(value.links, level === 1 ? RAW_CODE : DAG_CBOR_CODE)
  if (links.reduce((sum, [, n]) => sum + n, 0) !== length) fail('link lengths do not add up to the parent link length')
  return { links }
}
