import { open } from 'node:fs/promises'

const POLL_MS = 100
const CHUNK = 64 * 1024

/**
 * Copies a growing file (a VM's `console.log`) to `write` from `from` on, until `until` settles (the
 * VM exited: what it wrote last is copied too) or `signal` aborts. Returns the offset reached.
 * Polls: the log is written by QEMU in small pieces and inotify buys nothing at 10 Hz.
 */
export async function followFile (path: string, from: number, write: (bytes: Uint8Array) => void | Promise<void>, options: { until?: Promise<unknown>, signal?: AbortSignal } = {}): Promise<number> {
  let done = false
  void options.until?.finally(() => { done = true })
  const fd = await open(path, 'r')
  const buffer = Buffer.alloc(CHUNK)
  let at = from
  try {
    while (true) {
      const finished = done
      while (true) {
        const { bytesRead } = await fd.read(buffer, 0, CHUNK, at)
        if (bytesRead === 0) break
        at += bytesRead
        await write(Buffer.from(buffer.subarray(0, bytesRead)))
      }
      if (finished || options.signal?.aborted === true || options.until == null) return at
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, POLL_MS)
        options.signal?.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
      })
    }
  } finally {
    await fd.close()
  }
}

/**
 * Resolves once `pattern` appears in the file after `from` (e.g. a boot marker), or rejects on timeout
 * or when `until` settles first.
 */
export async function waitForText (path: string, from: number, pattern: string | RegExp, options: { timeoutMs: number, until?: Promise<unknown>, signal?: AbortSignal }): Promise<string> {
  const controller = new AbortController()
  const timer = setTimeout(() => { controller.abort() }, options.timeoutMs)
  options.signal?.addEventListener('abort', () => { controller.abort() }, { once: true })
  let text = ''
  let found: string | undefined
  const matches = (): boolean => {
    const m = typeof pattern === 'string' ? (text.includes(pattern) ? pattern : undefined) : pattern.exec(text)?.[0]
    if (m != null) found = m
    return m != null
  }
  try {
    await followFile(path, from, bytes => {
      text += Buffer.from(bytes).toString('utf8')
      if (matches()) controller.abort()
    }, { until: options.until, signal: controller.signal })
  } finally {
    clearTimeout(timer)
  }
  if (found == null) throw new Error(`"${String(pattern)}" did not appear in ${path}`)
  return found
}
