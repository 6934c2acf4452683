import { constants, PerformanceObserver } from 'node:perf_hooks'

/** What this process costs: CPU, memory and garbage collections since it started. */
export interface ProcessStats {
  /** User + system CPU of every thread (the GC's helper threads included). */
  cpuSeconds: number
  rssBytes: number
  heapUsedBytes: number
  /** Bytes of ArrayBuffers (block buffers, socket reads, decrypted messages), live or not yet swept. */
  arrayBufferBytes: number
  /**
   * Collections since `watchGc` was first called: full mark-compacts, scavenges, and the time the
   * main thread was paused for them. Many full collections in a transfer (one every few hundred
   * milliseconds) is V8 reacting to the ArrayBuffers a stream allocates (docs/benchmarks.md).
   */
  gc: { major: number, minor: number, pauseMs: number }
}

const gc = { major: 0, minor: 0, pauseMs: 0 }
let observer: PerformanceObserver | undefined

/** Starts counting garbage collections (once per process; a PerformanceObserver entry per GC). */
export function watchGc (): void {
  if (observer != null) return
  observer = new PerformanceObserver(list => {
    for (const entry of list.getEntries()) {
      const kind = (entry as { detail?: { kind?: number } }).detail?.kind
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.major++
      else if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++
      gc.pauseMs += entry.duration
    }
  })
  observer.observe({ entryTypes: ['gc'] })
}

export function processStats (): ProcessStats {
  const cpu = process.cpuUsage()
  const memory = process.memoryUsage()
  return {
    cpuSeconds: Math.round((cpu.user + cpu.system) / 1000) / 1000,
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    arrayBufferBytes: memory.arrayBuffers,
    gc: { major: gc.major, minor: gc.minor, pauseMs: Math.round(gc.pauseMs * 10) / 10 }
  }
}
