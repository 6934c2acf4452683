import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A tmpfs of `size` (e.g. '40m') mounted for a spec file: a real full disk. */
export interface Tmpfs {
  /** Where it is mounted (removed again if mounting failed). */
  path: string
  /** Why it could not be mounted (the specs run as root; elsewhere this says why they skip). */
  error?: string
  /** Unmounts and removes it (idempotent; lazily if it is busy). Also runs at process exit. */
  unmount: () => void
}

/** Mounts at once, at load time, so that a refusal can skip the spec with the real reason. */
export function mountTmpfs (size: string, prefix: string): Tmpfs {
  const path = mkdtempSync(join(tmpdir(), prefix))
  let error: string | undefined
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path], { stdio: 'pipe' })
  } catch (err: any) {
    error = String(err?.stderr ?? err?.message ?? err).trim()
    rmSync(path, { recursive: true, force: true })
  }
  let mounted = error == null
  const unmount = (): void => {
    if (!mounted) return
    mounted = false
    try {
      execFileSync('umount', [path], { stdio: 'pipe' })
    } catch {
      execFileSync('umount', ['-l', path], { stdio: 'pipe' })
    }
    rmSync(path, { recursive: true, force: true })
  }
  // Should the suite be filtered out or interrupted, never leave the tmpfs behind.
  process.once('exit', unmount)
  return { path, error, unmount }
}
