import { open, rename, rm } from 'node:fs/promises'
import { waitForText } from '../console.js'
import { encodeProfile } from './codec.js'
import type { ProfileRecorder } from './recorder.js'
import type { RecordEnd, RecordOptions, RecordedProfile } from './interface.js'

/** @default 120 s: a recording with no marker ends at the latest then (or when the VM stops). */
export const RECORD_TIMEOUT = 120_000
const FULL_POLL_MS = 200

/** Writes a file whole or not at all: a temporary file, fsynced, renamed over the target. */
export async function writeFileAtomic (path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  try {
    const fd = await open(tmp, 'w', 0o644)
    try {
      await fd.writeFile(bytes)
      await fd.sync()
    } finally {
      await fd.close()
    }
    await rename(tmp, path)
  } finally {
    await rm(tmp, { force: true })
  }
}

/** What a recording watches: the VM's console log from this run on, and its exit. */
export interface RecordedVm {
  console: string
  consoleStart: number
  exited: Promise<unknown>
}

/**
 * Ends a recording when the first of these happens: `until` appears on the console, the timeout,
 * the VM stops, the recorder is full; then writes the profile to `options.file`.
 */
export async function finishRecording (vm: RecordedVm, recorder: ProfileRecorder, options: RecordOptions & { signal?: AbortSignal }): Promise<RecordedProfile> {
  const timeoutMs = options.timeoutMs ?? RECORD_TIMEOUT
  const controller = new AbortController()
  const stop = options.signal != null ? AbortSignal.any([options.signal, controller.signal]) : controller.signal
  const waits: Array<Promise<RecordEnd>> = [
    vm.exited.then(() => 'exit' as const, () => 'exit' as const),
    new Promise(resolve => {
      const timer = setTimeout(() => { resolve('timeout') }, timeoutMs)
      stop.addEventListener('abort', () => { clearTimeout(timer) }, { once: true })
    }),
    (async () => {
      while (!stop.aborted && !recorder.full) await new Promise(resolve => setTimeout(resolve, FULL_POLL_MS))
      return recorder.full ? 'full' as const : 'exit' as const
    })()
  ]
  if (options.until != null) {
    // A marker that never comes (VM stopped, timeout) settles the other way: never 'marker'.
    waits.push(waitForText(vm.console, vm.consoleStart, options.until, { timeoutMs, until: vm.exited, signal: stop })
      .then(() => 'marker' as const, async () => await new Promise<never>(() => {})))
  }
  let reason: RecordEnd
  try {
    reason = await Promise.race(waits)
  } finally {
    controller.abort()
  }
  const profile = recorder.stop()
  await writeFileAtomic(options.file, encodeProfile(profile))
  return { file: options.file, reads: profile.reads.length, bytes: recorder.bytes, reason }
}
