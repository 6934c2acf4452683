import { parseArgs } from 'node:util'
import { COMMANDS, type Command } from './command.js'
import { existsSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Context, processIO, resolveDataDir, type CommandIO } from './context.js'
import { CONTROL_SOCKET, type DaemonHandle } from '../daemon/interface.js'
import { runInDaemon } from '../daemon/control.js'
import { AbortError, CollectiveError, ExitCode, UsageError, isSystemError } from '../errors.js'

const GLOBAL_HELP = `Usage: collective-peer <command> [options]

With no command, runs the host daemon (see: collective-peer daemon --help).

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join('\n')}

Global options:
  --data-dir DIR   data directory (default: $COLLECTIVE_DATA_DIR, else ~/.local/share/collective-peer)
  --json           machine output: NDJSON, the last line is the result
  -h, --help       help for a command (also: collective-peer help <command>)
  -V, --version    print the version and exit

Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 store busy, 5 corrupt data, 6 no space, 7 bad input.`

const GLOBAL_OPTIONS = {
  'data-dir': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false }
} as const

/** Flags that take a value, so the value is not taken for the command word. */
const VALUE_FLAGS = new Set(['--data-dir', '--listen', '--bootstrap'])

/** The index of the command word: the first positional, skipping the values of flags. */
function commandIndex (argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') return i + 1 < argv.length ? i + 1 : -1
    if (VALUE_FLAGS.has(a)) { i++; continue }
    if (!a.startsWith('-')) return i
  }
  return -1
}

function dataDirFlag (argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--data-dir') return argv[i + 1]
    if (argv[i]!.startsWith('--data-dir=')) return argv[i]!.slice('--data-dir='.length)
  }
  return undefined
}

/** The package's version (package.json next to dist/). */
async function version (): Promise<string> {
  const pkg = JSON.parse(await readFile(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'))
  return String(pkg.version)
}

function commandHelp (name: string, command: Command): string {
  return `Usage: collective-peer ${command.usage}\n\n${command.summary}\n${command.help != null ? '\n' + command.help + '\n' : ''}`
}

/**
 * The CLI's entry: with no command, the host daemon. While a daemon owns the data dir, commands are
 * sent to it over the control socket (LevelDB is single-process); otherwise they run here.
 */
export async function main (argv: string[]): Promise<number> {
  const controller = new AbortController()
  const onSignal = (): void => controller.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const at = commandIndex(argv)
    const help = argv.includes('--help') || argv.includes('-h')
    const versionAsked = at < 0 && (argv.includes('--version') || argv.includes('-V'))
    if (at < 0 && !help && !versionAsked) argv = ['daemon', ...argv]
    const name = at >= 0 ? argv[at]! : (help || versionAsked ? undefined : 'daemon')
    const entry = name != null ? COMMANDS[name] : undefined
    if (entry != null && entry.local !== true && !help) {
      const dataDir = resolveDataDir(dataDirFlag(argv))
      const socket = join(dataDir, CONTROL_SOCKET)
      if (existsSync(socket) && await findDaemon(dataDir, socket, controller.signal)) {
        const tty = { stdout: process.stdout.isTTY === true, stderr: process.stderr.isTTY === true, columns: process.stderr.columns }
        return await runInDaemon(socket, { argv, cwd: process.cwd(), tty }, processIO(), controller.signal)
      }
    }
    return await runCommand(argv, processIO(), controller.signal)
  } catch (err) {
    return report(err, argv.includes('--json'), processIO())
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** The first wait for the daemon's answer; then twice as long each time, at most DAEMON_WAIT_MAX. */
const DAEMON_WAIT_FIRST = 2_000
const DAEMON_WAIT_MAX = 30_000
/** How long a CLI waits in all for a daemon that holds its socket but does not answer (COLLECTIVE_DAEMON_WAIT_MS). */
const DAEMON_WAIT_TOTAL = ((): number => {
  const ms = Number(process.env.COLLECTIVE_DAEMON_WAIT_MS)
  return Number.isFinite(ms) && ms > 0 ? ms : 120_000
})()

export class DaemonBusyError extends CollectiveError {
  static readonly code = 'ERR_DAEMON_BUSY'
  override readonly name = 'DaemonBusyError'
  constructor (message: string) { super(message, DaemonBusyError.code, ExitCode.Busy) }
}

/**
 * Whether a daemon owns the data dir (commands go through it) or none does (they run here).
 *
 * A daemon is alive while a process listens on the control socket: the kernel accepts a connection
 * on a unix socket only while some process holds its listening end, so a connection that is accepted
 * but not answered is a live daemon that is slow (a loaded machine, a long GC pause, SIGSTOP). Its
 * answer is awaited again, each time twice as long, up to DAEMON_WAIT_TOTAL: falling back to the
 * store here would only fail with ERR_STORE_LOCKED, since the daemon holds it. A refused connection
 * (ECONNREFUSED, or the socket gone) is a stale socket left by a killed daemon: commands run here.
 */
async function findDaemon (dataDir: string, socket: string, signal: AbortSignal): Promise<boolean> {
  const started = Date.now()
  let wait = DAEMON_WAIT_FIRST
  let told = false
  for (;;) {
    const answer = await probe(socket, wait)
    // Refused, or the socket gone: nobody listens (a stale socket). An answer that is not a status:
    // not a daemon that runs commands. Either way the command runs here, as it always has.
    if (answer !== 'slow') return answer === 'daemon'
    if (signal.aborted) throw new AbortError()
    const waited = Date.now() - started
    const holder = await storeLockHolder(dataDir)
    const who = holder != null ? ` (pid ${holder})` : ''
    if (waited >= DAEMON_WAIT_TOTAL) {
      throw new DaemonBusyError(`the daemon on ${dataDir}${who} holds its control socket but has not answered in ${Math.round(waited / 1000)} s`)
    }
    if (!told && process.stderr.isTTY === true) {
      process.stderr.write(`waiting for the daemon on ${dataDir}${who} to answer…\n`)
      told = true
    }
    wait = Math.min(wait * 2, DAEMON_WAIT_MAX, Math.max(1_000, DAEMON_WAIT_TOTAL - waited))
  }
}

/**
 * One `GET /status` on the control socket: 'daemon' when it answers 200 within `timeoutMs`; 'slow'
 * when the connection is accepted (or the backlog is full) but no answer comes in time; 'none' when
 * the connection is refused, the socket is gone, or the answer is not a status.
 */
async function probe (socketPath: string, timeoutMs: number): Promise<'daemon' | 'slow' | 'none'> {
  return await new Promise(resolve => {
    const req = request({ socketPath, path: '/status', method: 'GET' }, res => {
      res.resume()
      res.on('end', () => { clearTimeout(timer); resolve(res.statusCode === 200 ? 'daemon' : 'none') })
      res.on('error', () => { clearTimeout(timer); resolve('none') })
    })
    // No answer in time: the connection was accepted, so a process listens (the kernel accepts on a
    // unix socket only while one holds its listening end); it is just slow.
    const timer = setTimeout(() => { resolve('slow'); req.destroy() }, timeoutMs)
    req.on('error', err => {
      clearTimeout(timer)
      resolve(isSystemError(err, 'EAGAIN') ? 'slow' : 'none')
    })
    req.end()
  })
}

/**
 * The pid holding the store's LevelDB lock (a POSIX lock on store/index/LOCK, listed in
 * /proc/locks on Linux), for messages; undefined where that cannot be told.
 */
async function storeLockHolder (dataDir: string): Promise<number | undefined> {
  try {
    const { ino } = await stat(join(dataDir, 'store', 'index', 'LOCK'))
    for (const line of (await readFile('/proc/locks', 'utf8')).split('\n')) {
      const fields = line.trim().split(/\s+/)
      const at = fields.findIndex(f => /^[0-9a-f]+:[0-9a-f]+:\d+$/.test(f))
      if (at > 0 && fields[at]!.split(':')[2] === String(ino)) return Number(fields[at - 1])
    }
  } catch {}
  return undefined
}

/** Runs one CLI invocation here, or inside a daemon (`daemon` set); returns the exit code. */
export async function runCommand (argv: string[], io: CommandIO, signal: AbortSignal, daemon?: DaemonHandle): Promise<number> {
  let json = argv.includes('--json')
  let ctx: Context | undefined
  try {
    const at = commandIndex(argv)
    const name = at >= 0 ? argv[at] : undefined
    const entry = name != null ? COMMANDS[name] : undefined
    if (name == null && (argv.includes('--version') || argv.includes('-V'))) {
      const v = await version()
      io.stdout.write(json ? JSON.stringify({ version: v }) + '\n' : `collective-peer ${v}\n`)
      return ExitCode.Ok
    }
    if (name == null) {
      io.stdout.write(GLOBAL_HELP + '\n')
      return ExitCode.Ok
    }
    if (name === 'help') {
      const topic = argv[at + 1]
      const about = topic != null ? COMMANDS[topic] : undefined
      if (topic != null && about == null) throw new UsageError(`unknown command "${topic}" (see collective-peer --help)`)
      io.stdout.write(topic != null && about != null ? commandHelp(topic, (await about.load()).default) : GLOBAL_HELP + '\n')
      return ExitCode.Ok
    }
    if (entry == null) throw new UsageError(`unknown command "${name}" (see collective-peer --help)`)
    if (daemon != null && entry.local === true) throw new UsageError(`"${name}" cannot run inside the daemon`)
    const command = (await entry.load()).default
    const args = argv.filter((_, i) => i !== at)
    let parsed
    try {
      parsed = parseArgs({ args, options: { ...GLOBAL_OPTIONS, ...command.options }, allowPositionals: true, strict: true })
    } catch (err) {
      throw new UsageError(`${(err as Error).message.split('\n')[0]} (see collective-peer ${name} --help)`)
    }
    const values = parsed.values as Record<string, unknown>
    json = values.json === true
    if (values.help === true) {
      io.stdout.write(commandHelp(name, command))
      return ExitCode.Ok
    }
    const count = parsed.positionals.length
    const [min, max] = Array.isArray(command.positionals) ? command.positionals : [command.positionals ?? 0, command.positionals ?? 0]
    if (count < min || count > max) throw new UsageError(`usage: collective-peer ${command.usage}`)
    const context = ctx = new Context({ dataDir: values['data-dir'] as string | undefined, json }, signal, io, daemon)
    const execute = async (): Promise<number | void> => await command.run(context, parsed.positionals, values)
    const code = daemon != null
      ? await daemon.lock.run(command.exclusive === true, execute, { signal }).finally(() => { void daemon.provideRoots() })
      : await execute()
    await ctx.close()
    return code ?? ExitCode.Ok
  } catch (err) {
    await ctx?.close().catch(() => {})
    return report(err, json, io)
  }
}

function report (err: unknown, json: boolean, io: CommandIO): number {
  const known = err instanceof CollectiveError
  const code = known ? err.code : 'ERR_INTERNAL'
  const message = (err as Error)?.message ?? String(err)
  io.stderr.write(`error [${code}]: ${message.split('\n')[0]}\n`)
  if (!known && process.env.DEBUG != null) io.stderr.write(`${(err as Error)?.stack}\n`)
  if (json) io.stdout.write(JSON.stringify({ error: { code, message } }) + '\n')
  return known ? err.exitCode : ExitCode.Failure
}
