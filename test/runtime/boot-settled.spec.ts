/** When a booting VM's disk I/O has settled (the moment its background pull starts). */
import { describe, it, expect } from 'vitest'
import { bootSettled } from '../../src/runtime/boot-settled.js'

const never = new Promise<void>(() => {})

describe('bootSettled', () => {
  it('waits for a first read, then for quiet', async () => {
    let last: number | undefined
    const started = Date.now()
    const reads = setInterval(() => { if (Date.now() - started > 300 && Date.now() - started < 900) last = Date.now() }, 50)
    try {
      expect(await bootSettled({ lastRead: () => last, exited: never, quietMs: 400, maxDelayMs: 10_000 })).toBe(true)
    } finally {
      clearInterval(reads)
    }
    const took = Date.now() - started
    expect(took).toBeGreaterThanOrEqual(1200)
    expect(took).toBeLessThan(3000)
  })

  it('gives up waiting at the deadline, when the VM exits, or (false) when aborted', async () => {
    let t = Date.now()
    expect(await bootSettled({ lastRead: () => undefined, exited: never, maxDelayMs: 300 })).toBe(true)
    expect(Date.now() - t).toBeLessThan(1500)
    t = Date.now()
    expect(await bootSettled({ lastRead: () => Date.now(), exited: new Promise(resolve => setTimeout(resolve, 200)) })).toBe(true)
    expect(Date.now() - t).toBeLessThan(1500)
    const controller = new AbortController()
    setTimeout(() => { controller.abort() }, 100)
    expect(await bootSettled({ lastRead: () => undefined, exited: never, signal: controller.signal })).toBe(false)
  })
})
