/**
 * A set of byte ranges, kept as sorted disjoint half-open runs (touching runs merged). `add` returns
 * the parts of the new range that were not in the set yet, in order.
 */
export class RangeSet {
  private readonly starts: number[] = []
  private readonly ends: number[] = []

  get runs (): number { return this.starts.length }

  add (start: number, end: number): Array<[number, number]> {
    if (end <= start) return []
    // The first run that ends at or after `start` (it may touch or overlap the new range).
    let lo = 0
    let hi = this.ends.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.ends[mid]! < start) lo = mid + 1
      else hi = mid
    }
    const gaps: Array<[number, number]> = []
    let at = start
    let i = lo
    let mergedStart = start
    let mergedEnd = end
    while (i < this.starts.length && this.starts[i]! <= end) {
      const s = this.starts[i]!
      const e = this.ends[i]!
      if (s > at) gaps.push([at, Math.min(s, end)])
      at = Math.max(at, e)
      mergedStart = Math.min(mergedStart, s)
      mergedEnd = Math.max(mergedEnd, e)
      i++
    }
    if (at < end) gaps.push([at, end])
    this.starts.splice(lo, i - lo, mergedStart)
    this.ends.splice(lo, i - lo, mergedEnd)
    return gaps
  }
}
