/** A boot's disk I/O has settled when its disks have not been read for this long... */
export const QUIET_MS = 2_000
/** ...or, at the latest, this long after the VM started (a guest that reads on and on). */
export const MAX_DELAY_MS = 30_000
const POLL_MS = 250

export interface SettleOptions {
  /** When the VM's disks were last read (undefined: not yet). */
  lastRead(): number | undefined
  /** Settles once the VM is gone: nothing left to wait for. */
  exited: Promise<unknown>
  signal?: AbortSignal
  /** @default 2 s */
  quietMs?: number
  /** @default 30 s */
  maxDelayMs?: number
}

/**
 * Resolves when a booting VM's disk reads have gone quiet (after its first read), when it exits, or
 * after `maxDelayMs`: the moment to start pulling the rest of its disks in the background. Before,
 * the pull would compete with the boot for the host's CPUs (verifying, storing) and the peers' uploads.
 * Resolves `false` when `signal` aborts.
 */
export async function bootSettled (options: SettleOptions): Promise<boolean> {
  const quiet = options.quietMs ?? QUIET_MS
  const deadline = Date.now() + (options.maxDelayMs ?? MAX_DELAY_MS)
  let exited = false
  void options.exited.then(() => { exited = true }, () => { exited = true })
  while (true) {
    if (options.signal?.aborted === true) return false
    const last = options.lastRead()
    const now = Date.now()
    if (exited || now >= deadline || (last != null && now - last >= quiet)) return true
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, POLL_MS)
      options.signal?.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
    })
  }
}
