import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { BIN, cli, type CliResult } from './cli.js'

/** A daemon process started by a test. */
export interface TestDaemon {
  dataDir: string
  proc: ChildProcess
  peerId: string
  /** Listen multiaddrs, each ending in /p2p/<peerId>. */
  addresses: string[]
  /** Every NDJSON event it printed so far. */
  events: any[]
  stderr: () => string
  /** Runs a CLI command against this daemon's data dir (through its control socket). */
  run: (args: string[], options?: { timeoutMs?: number }) => Promise<CliResult>
  /** SIGTERM, then waits for the exit code. */
  stop: () => Promise<number | null>
  /** SIGKILL, then waits. */
  kill: () => Promise<void>
}

const running = new Set<ChildProcess>()

/** Kills every daemon still running (afterAll / afterEach). */
export async function killAll (): Promise<void> {
  await Promise.all([...running].map(async proc => {
    if (proc.exitCode == null && proc.signalCode == null) {
      proc.kill('SIGKILL')
      await new Promise(resolve => proc.once('exit', resolve))
    }
  }))
  running.clear()
}

async function exited (proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode != null || proc.signalCode != null) return proc.exitCode
  return await new Promise(resolve => proc.once('exit', code => { resolve(code) }))
}

/**
 * Starts `collective-peer daemon --json` on 127.0.0.1 (no mDNS: tests choose who knows whom) and
 * waits for its ready event. Rejects with its stderr if it exits first.
 */
export async function startDaemon (dataDir: string, args: string[] = [], options: { timeoutMs?: number, env?: Record<string, string> } = {}): Promise<TestDaemon> {
  const proc = spawn(process.execPath, [BIN, '--data-dir', dataDir, 'daemon', '--json', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, COLLECTIVE_BOOTSTRAP: '', COLLECTIVE_LISTEN: '', ...options.env }
  })
  running.add(proc)
  proc.once('exit', () => { running.delete(proc) })
  let stderr = ''
  proc.stderr!.on('data', d => { stderr += d })
  const events: any[] = []
  const ready = new Promise<any>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`daemon did not start in time; stderr: ${stderr}`)) }, options.timeoutMs ?? 20_000)
    createInterface({ input: proc.stdout! }).on('line', line => {
      let event: any
      try { event = JSON.parse(line) } catch { return }
      events.push(event)
      if (event.type === 'daemon:ready') { clearTimeout(timer); resolve(event) }
    })
    proc.once('exit', code => { clearTimeout(timer); reject(new Error(`daemon exited with ${code} before ready; stderr: ${stderr}`)) })
  })
  const event = await ready
  return {
    dataDir,
    proc,
    peerId: event.peerId,
    addresses: event.addresses,
    events,
    stderr: () => stderr,
    run: async (a, o) => await cli(['--data-dir', dataDir, ...a], { timeoutMs: o?.timeoutMs ?? 120_000 }),
    stop: async () => { proc.kill('SIGTERM'); return await exited(proc) },
    kill: async () => { proc.kill('SIGKILL'); await exited(proc) }
  }
}

/** Starts a CLI command and calls `onEvent` for each NDJSON line it prints (progress, result). */
export function spawnWatched (args: string[], onEvent: (event: any) => void): { proc: ChildProcess, done: Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string, last?: any }> } {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(proc)
  let stderr = ''
  let last: any
  proc.stderr!.on('data', d => { stderr += d })
  createInterface({ input: proc.stdout! }).on('line', line => {
    try { last = JSON.parse(line) } catch { return }
    onEvent(last)
  })
  const done = new Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string, last?: any }>(resolve => {
    proc.once('close', (code, signal) => { running.delete(proc); resolve({ code, signal, stderr, last }) })
  })
  return { proc, done }
}
