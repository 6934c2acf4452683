import { spawn, type ChildProcess } from 'node:child_process'
import { expect } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

export const BIN = resolve(import.meta.dirname, '../../bin/collective-peer.js')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** The last NDJSON line of stdout, parsed (with --json). */
  result?: any
  lines: any[]
}

/** Runs the real CLI (built into dist/) as a separate process. */
export async function cli (args: string[], options: { env?: Record<string, string>, timeoutMs?: number, input?: string, cwd?: string } = {}): Promise<CliResult> {
  return await new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...options.env }, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => { stdout += d })
    child.stderr.on('data', d => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const lines = stdout.split('\n').filter(l => l.startsWith('{')).map(l => { try { return JSON.parse(l) } catch { return undefined } }).filter(Boolean)
      resolvePromise({ code, signal, stdout, stderr, lines, result: lines[lines.length - 1] })
    })
    child.stdin.end(options.input ?? '')
  })
}

/** Starts the CLI without waiting (for kill tests). */
export function spawnCli (args: string[]): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
}

/** A fresh temporary folder, removed by the returned cleanup. */
export async function tempDir (prefix = 'cp-test-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

/** The CLI's error contract: exit `exit`, and stderr exactly one line `error [CODE]: message`. */
export function expectOneLineError (r: CliResult, code: string, exit: number): void {
  const context = `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`
  expect(r.code, context).toBe(exit)
  expect(r.stderr, context).toMatch(/^error \[ERR_[A-Z_]+\]: [^\n]+\n$/)
  expect(r.stderr, context).toMatch(new RegExp(`^error \\[${code}\\]: `))
}

/** Polls `fn` every 250 ms until it returns a value; throws naming `what` after `timeoutMs`. */
export async function until<T> (what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 250))
  }
}
