import { getHeapStatistics, setFlagsFromString } from 'node:v8'

/** The old generation may grow to this many times what survived the last full GC (factor 4), ... */
const GROWING_PERCENT = 300
/** ... while the live heap is under this; past it, V8's own heuristics again (memory over CPU). */
const SMALL_HEAP = 256 * 1024 * 1024
const CHECK_MS = 10_000

let started = false

/**
 * Lets a small heap grow before V8 runs a full mark-compact, in a process that moves blocks.
 *
 * V8 sets the next full GC of a small heap close above what survived the last one (a factor near
 * 1.1 here). A host in a swarm keeps ~30 MB live and promotes a few MB a second: blocks and
 * requests in flight for a second or two at a slow peer's pace outlive two scavenges. So it ran a
 * mark-compact every 0.5–1 s, each a 30–160 ms pause plus concurrent marking on the GC threads:
 * `node bench/fanout.js --hosts 16` counted 464 mark-compacts and 37 s of pauses in its 17 daemons
 * (--trace-gc), on 2 cores. With a factor of 4: 71 and 4.6 s; CPU 95 -> 79 s (docs/benchmarks.md).
 * The cost is memory: up to ~4x the live heap before it is collected (~130 MB for 30 MB live).
 * Checked every CHECK_MS: past SMALL_HEAP live, V8's dynamic factor is restored. A process started
 * with its own --heap-growing-percent is left alone.
 */
export function tuneHeapGrowth (): void {
  if (started) return
  started = true
  if (process.execArgv.some(a => a.startsWith('--heap-growing-percent'))) return
  let fixed: boolean | undefined
  const apply = (): void => {
    const small = getHeapStatistics().used_heap_size < SMALL_HEAP
    if (small === fixed) return
    fixed = small
    setFlagsFromString(`--heap-growing-percent=${small ? GROWING_PERCENT : 0}`)
  }
  apply()
  setInterval(apply, CHECK_MS).unref()
}
