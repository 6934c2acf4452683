import { AbortError } from '../errors.js'

interface Waiter {
  exclusive: boolean
  grant(): void
}

/**
 * Many shared holders at once, or one exclusive holder; first come, first served (a waiting
 * exclusive request holds back later shared ones, so gc is not starved by a stream of imports).
 * The daemon runs commands that add blocks (import, pull) shared, and those that delete blocks
 * (gc, fsck) exclusive: gc must never see a half-imported, not yet pinned DAG.
 */
export class SharedExclusiveLock {
  private shared = 0
  private exclusive = false
  private readonly queue: Waiter[] = []

  async run<T> (exclusive: boolean, fn: () => Promise<T>, options: { signal?: AbortSignal } = {}): Promise<T> {
    await this.acquire(exclusive, options.signal)
    try {
      return await fn()
    } finally {
      if (exclusive) this.exclusive = false
      else this.shared--
      this.drain()
    }
  }

  private async acquire (exclusive: boolean, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) throw new AbortError()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.queue.indexOf(waiter)
        if (at >= 0) this.queue.splice(at, 1)
        reject(new AbortError())
        this.drain()
      }
      const waiter: Waiter = {
        exclusive,
        grant: () => { signal?.removeEventListener('abort', onAbort); resolve() }
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.queue.push(waiter)
      this.drain()
    })
  }

  private drain (): void {
    while (this.queue.length > 0) {
      const next = this.queue[0]!
      if (this.exclusive) return
      if (next.exclusive) {
        if (this.shared > 0) return
        this.exclusive = true
      } else {
        this.shared++
      }
      this.queue.shift()
      next.grant()
    }
  }
}
