import { RangeSet } from './ranges.js'
import { MAX_PROFILE_READS } from './codec.js'
import type { BootProfile, ProfileRead } from './interface.js'

/**
 * Records the order in which a boot first reads its disks: each read adds the bytes not read before,
 * appended to the last range when it continues it (so a sequential scan is one range). Bounded: at
 * `maxReads` ranges it stops (`full`) and the profile covers the boot up to there.
 */
export class ProfileRecorder {
  private readonly seen: RangeSet[]
  private readonly reads: ProfileRead[] = []
  private readonly maxReads: number
  private stopped = false
  /** Distinct bytes read so far. */
  bytes = 0
  /** True once `maxReads` was reached (later reads were not recorded). */
  full = false

  constructor (disks: number, options: { maxReads?: number } = {}) {
    this.seen = Array.from({ length: disks }, () => new RangeSet())
    this.maxReads = Math.min(options.maxReads ?? MAX_PROFILE_READS, MAX_PROFILE_READS)
  }

  get count (): number { return this.reads.length }

  onRead (disk: number, offset: number, length: number): void {
    const seen = this.seen[disk]
    if (this.stopped || seen == null || length <= 0) return
    for (const [start, end] of seen.add(offset, offset + length)) {
      const last = this.reads[this.reads.length - 1]
      if (last != null && last[0] === disk && last[1] + last[2] === start) {
        last[2] += end - start
      } else if (this.reads.length >= this.maxReads) {
        this.full = true
        this.stopped = true
        return
      } else {
        this.reads.push([disk, start, end - start])
      }
      this.bytes += end - start
    }
  }

  /** Stops recording; the profile so far. */
  stop (): BootProfile {
    this.stopped = true
    return { version: 1, reads: this.reads.map(r => [...r] as ProfileRead) }
  }
}
