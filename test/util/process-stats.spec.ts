import { describe, it, expect } from 'vitest'
import { processStats, watchGc } from '../../src/util/process-stats.js'

describe('process stats (the daemon status\'s "process")', () => {
  it('counts the scavenges and full collections V8 runs after watchGc', async () => {
    watchGc()
    const before = processStats()
    // Garbage enough for several scavenges, and a long-lived array V8 must promote and mark.
    let keep: Array<{ i: number, s: string }> = []
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 50_000; i++) keep.push({ i, s: `item ${i}` })
      if (round % 5 === 4) keep = []
    }
    // A large external allocation after many: V8 may also collect for external memory.
    const buffers = Array.from({ length: 64 }, () => Buffer.alloc(1024 * 1024))
    expect(buffers.length).toBe(64)
    await new Promise(resolve => setTimeout(resolve, 50)) // the observer hears of collections asynchronously
    const after = processStats()
    expect(after.gc.minor).toBeGreaterThan(before.gc.minor)
    expect(after.gc.pauseMs).toBeGreaterThan(before.gc.pauseMs)
    expect(after.cpuSeconds).toBeGreaterThan(before.cpuSeconds)
    expect(after.arrayBufferBytes).toBeGreaterThanOrEqual(64 * 1024 * 1024)
  })
})
