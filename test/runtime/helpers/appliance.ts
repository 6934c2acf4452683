import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createServer } from 'node:net'
import { readFile } from 'node:fs/promises'

const exec = promisify(execFile)
const ROOT = resolve(import.meta.dirname, '../../..')

export interface Appliance {
  dir: string
  disk: string
  /** The uncompressed kernel when the script could unpack it (boots ~2x faster), else vmlinuz. */
  kernel: string
  initrd: string
}

/** Builds (or reuses, cached in .cache/appliance) the test appliance from Debian packages. */
export async function buildAppliance (): Promise<Appliance> {
  const dir = join(ROOT, '.cache', 'appliance')
  await exec('bash', [join(ROOT, 'scripts/fixtures/make-appliance.sh')], { timeout: 300_000 })
  const vmlinux = join(dir, 'vmlinux')
  return { dir, disk: join(dir, 'disk.img'), kernel: existsSync(vmlinux) ? vmlinux : join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img') }
}

/** A TCP port nothing listens on right now. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  await new Promise<void>(r => server.close(() => { r() }))
  return port
}

/** Polls a file until `pattern` appears (a boot marker in a console log). */
export async function waitForFile (path: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const text = await readFile(path, 'utf8').catch(() => '')
    if (pattern.test(text)) return text
    await new Promise(r => setTimeout(r, 100))
  }
  throw new Error(`${pattern} did not appear in ${path} within ${timeoutMs} ms: ${(await readFile(path, 'utf8').catch(() => '')).slice(-2000)}`)
}

/** Whether a process is alive (and not a zombie). */
export function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}
