import { readFile, stat } from 'node:fs/promises'
import type { RecordOptions, RecordedProfile } from '../runtime/index.js'
import { UsageError } from '../errors.js'
import { positiveInt } from './vm-flags.js'
import type { Options } from './command.js'
import type { Context } from './context.js'

/** `run`/`start` flags that record a boot profile. */
export const RECORD_OPTIONS: Options = {
  'record-profile': { type: 'string' },
  'record-until': { type: 'string' },
  'record-timeout': { type: 'string' }
}

export const RECORD_USAGE = '[--record-profile FILE [--record-until TEXT] [--record-timeout SECONDS]]'

export const RECORD_HELP = `  --record-profile FILE  record the order in which this boot first reads the disks (a boot profile,
                        dag-cbor) and write it to FILE; put it in appliance.json ("bootProfile": FILE) so
                        hosts prefetch those blocks first. Record a first boot: add --fresh
  --record-until TEXT   stop recording when TEXT appears on the console (a boot-complete marker)
  --record-timeout SECS stop recording after SECS at the latest (default 120; also when the VM stops)`

/** The recording `run`/`start` was asked for (paths resolved against the caller's directory). */
export function recordOptions (ctx: Context, values: Record<string, unknown>): RecordOptions | undefined {
  const file = values['record-profile'] as string | undefined
  if (file == null) {
    if (values['record-until'] != null || values['record-timeout'] != null) throw new UsageError('--record-until and --record-timeout need --record-profile FILE')
    return undefined
  }
  if (values.fresh !== true) ctx.note('recording a boot profile without --fresh: what the VM\'s layer already holds is not read from the disk, so not recorded')
  return {
    file: ctx.path(file),
    until: values['record-until'] as string | undefined,
    timeoutMs: positiveInt(values['record-timeout'], '--record-timeout', 120) * 1000
  }
}

/** The same flags as an argv again (a `run` handed to the daemon as a `start`), paths made absolute. */
export function recordArgv (record: RecordOptions | undefined): string[] {
  if (record == null) return []
  const argv = ['--record-profile', record.file, '--record-timeout', String(record.timeoutMs! / 1000)]
  if (record.until != null) argv.push('--record-until', record.until)
  return argv
}

/**
 * The profile a daemon wrote for a VM this `run` followed: it is written when the recording ends
 * (at the marker, or just after the VM stopped), so wait for a file newer than the run's start.
 */
export async function awaitProfileFile (file: string, since: number, options: { timeoutMs: number, signal?: AbortSignal }): Promise<RecordedProfile | undefined> {
  const deadline = Date.now() + options.timeoutMs
  while (Date.now() < deadline && options.signal?.aborted !== true) {
    const info = await stat(file).catch(() => undefined)
    // (file times come from a coarse clock: a few ms behind Date.now())
    if (info != null && info.mtimeMs >= since - 20) {
      const { decodeProfile } = await import('../runtime/profile/index.js')
      const profile = decodeProfile(await readFile(file))
      return { file, reads: profile.reads.length, bytes: profile.reads.reduce((n, r) => n + r[2], 0) }
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return undefined
}

export function describeProfile (p: RecordedProfile): string {
  const why = p.reason == null ? '' : ` (${{ marker: 'at the marker', timeout: 'at the timeout', exit: 'when the VM stopped', full: 'full' }[p.reason]})`
  return `boot profile: ${p.reads} ranges, ${(p.bytes / 1024 / 1024).toFixed(1)} MiB first read, written to ${p.file}${why}`
}
