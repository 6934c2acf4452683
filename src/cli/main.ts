import { parseArgs } from 'node:util'
import { COMMANDS, type Command } from './command.js'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Context, processIO, resolveDataDir, type CommandIO } from './context.js'
import { CONTROL_SOCKET, type DaemonHandle } from '../daemon/interface.js'
import { daemonAnswers, runInDaemon } from '../daemon/control.js'
import { CollectiveError, ExitCode, UsageError } from '../errors.js'

const GLOBAL_HELP = `Usage: collective-peer <command> [options]

With no command, runs the host daemon (see: collective-peer daemon --help).

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join('\n')}

Global options:
  --data-dir DIR   data directory (default: $COLLECTIVE_DATA_DIR, else ~/.local/share/collective-peer)
  --json           machine output: NDJSON, the last line is the result
  -h, --help       help for a command

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
    if (at < 0 && !help) argv = ['daemon', ...argv]
    const name = at >= 0 ? argv[at]! : (help ? undefined : 'daemon')
    const entry = name != null ? COMMANDS[name] : undefined
    if (entry != null && entry.local !== true && !help) {
      const socket = join(resolveDataDir(dataDirFlag(argv)), CONTROL_SOCKET)
      if (existsSync(socket) && await daemonAnswers(socket)) {
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

/** Runs one CLI invocation here, or inside a daemon (`daemon` set); returns the exit code. */
export async function runCommand (argv: string[], io: CommandIO, signal: AbortSignal, daemon?: DaemonHandle): Promise<number> {
  let json = argv.includes('--json')
  let ctx: Context | undefined
  try {
    const at = commandIndex(argv)
    const name = at >= 0 ? argv[at] : undefined
    const entry = name != null ? COMMANDS[name] : undefined
    if (name == null) {
      io.stdout.write(GLOBAL_HELP + '\n')
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
