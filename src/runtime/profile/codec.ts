import * as dagCbor from '@ipld/dag-cbor'
import { InvalidBootProfileError } from '../errors.js'
import type { BootProfile, ProfileRead } from './interface.js'

/** Ranges a profile may hold: a boot reads far fewer distinct runs (a Debian boot: a few thousand). */
export const MAX_PROFILE_READS = 65_536
/** The largest profile blob a host fetches and decodes (65 536 ranges encode to well under 1 MiB). */
export const MAX_PROFILE_BYTES = 2 * 1024 * 1024
/** As many disks as a manifest may list. */
const MAX_DISKS = 16

export function encodeProfile (profile: BootProfile): Uint8Array {
  return dagCbor.encode({ version: profile.version, reads: profile.reads })
}

/** Decodes and checks a profile: version 1, at most MAX_PROFILE_READS in-range, non-empty ranges. */
export function decodeProfile (bytes: Uint8Array): BootProfile {
  if (bytes.length > MAX_PROFILE_BYTES) throw new InvalidBootProfileError(`boot profile of ${bytes.length} bytes (at most ${MAX_PROFILE_BYTES})`)
  let value: any
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidBootProfileError(`boot profile is not dag-cbor (${(err as Error).message})`)
  }
  if (value == null || typeof value !== 'object' || value.version !== 1) throw new InvalidBootProfileError('boot profile: version must be 1')
  if (!Array.isArray(value.reads)) throw new InvalidBootProfileError('boot profile: reads must be a list')
  if (value.reads.length > MAX_PROFILE_READS) throw new InvalidBootProfileError(`boot profile: ${value.reads.length} reads (at most ${MAX_PROFILE_READS})`)
  const reads: ProfileRead[] = value.reads.map((r: unknown, i: number) => {
    const ok = Array.isArray(r) && r.length === 3 && r.every(n => Number.isSafeInteger(n) && n >= 0) &&
      r[0] < MAX_DISKS && r[2] > 0 && Number.isSafeInteger(r[1] + r[2])
    if (!ok) throw new InvalidBootProfileError(`boot profile: reads[${i}] is not [disk, offset, length]`)
    return r as ProfileRead
  })
  return { version: 1, reads }
}
