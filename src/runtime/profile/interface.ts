/** A range of a disk first read during a boot: `[disk index, offset, length]` (bytes). */
export type ProfileRead = [disk: number, offset: number, length: number]

/**
 * A boot profile (a blob of the appliance, dag-cbor): the order in which a boot first read its disks.
 * A host starting the appliance cold fetches these ranges first, at prefetch priority.
 */
export interface BootProfile {
  version: 1
  reads: ProfileRead[]
}

/** How a recording ended. */
export type RecordEnd = 'marker' | 'timeout' | 'exit' | 'full'

/** What `run --record-profile` wrote. */
export interface RecordedProfile {
  file: string
  reads: number
  /** Distinct bytes the boot read. */
  bytes: number
  /** Unknown to a `run` whose daemon recorded it. */
  reason?: RecordEnd
}

export interface RecordOptions {
  /** Where the dag-cbor profile is written (atomically). */
  file: string
  /** Stop recording when this text appears on the console (e.g. a boot-complete marker). */
  until?: string
  /** Stop recording after this long at most (ms). @default 120 s */
  timeoutMs?: number
}

/** Progress of a profile's prefetch (cumulative counts). */
export type PrefetchEvent =
  | { type: 'profile:start', root: string, reads: number }
  | { type: 'profile:progress', blocks: number, bytes: number, local: number }
  | { type: 'profile:done', blocks: number, bytes: number, local: number, failed: number, ms: number }
