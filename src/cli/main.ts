import { parseArgs } from 'node:util'
import { COMMANDS, type Command } from './command.js'
import { Context } from './context.js'
import { CollectiveError, ExitCode, UsageError } from '../errors.js'

const GLOBAL_HELP = `Usage: collective-peer <command> [options]

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`).join('\n')}

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

/** The index of the command word: the first positional, skipping the values of global flags. */
function commandIndex (argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') return i + 1 < argv.length ? i + 1 : -1
    if (a === '--data-dir') { i++; continue }
    if (!a.startsWith('-')) return i
  }
  return -1
}

function commandHelp (name: string, command: Command): string {
  return `Usage: collective-peer ${command.usage}\n\n${command.summary}\n${command.help != null ? '\n' + command.help + '\n' : ''}`
}

/** Runs the CLI; returns the exit code. Core errors become `error [CODE]: message`. */
export async function main (argv: string[]): Promise<number> {
  const controller = new AbortController()
  const onSignal = (): void => controller.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let json = argv.includes('--json')
  let ctx: Context | undefined
  try {
    const at = commandIndex(argv)
    const name = at >= 0 ? argv[at] : undefined
    const entry = name != null ? COMMANDS[name] : undefined
    if (name == null) {
      if (argv.includes('--help') || argv.includes('-h')) {
        process.stdout.write(GLOBAL_HELP + '\n')
        return ExitCode.Ok
      }
      throw new UsageError('no command given (the host daemon arrives with the swarm; see --help)')
    }
    if (entry == null) throw new UsageError(`unknown command "${name}" (see collective-peer --help)`)
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
      process.stdout.write(commandHelp(name, command))
      return ExitCode.Ok
    }
    const count = parsed.positionals.length
    const [min, max] = Array.isArray(command.positionals) ? command.positionals : [command.positionals ?? 0, command.positionals ?? 0]
    if (count < min || count > max) throw new UsageError(`usage: collective-peer ${command.usage}`)
    ctx = new Context({ dataDir: values['data-dir'] as string | undefined, json }, controller.signal)
    const code = await command.run(ctx, parsed.positionals, values)
    await ctx.close()
    return code ?? ExitCode.Ok
  } catch (err) {
    await ctx?.close().catch(() => {})
    return report(err, json)
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

function report (err: unknown, json: boolean): number {
  const known = err instanceof CollectiveError
  const code = known ? err.code : 'ERR_INTERNAL'
  const message = (err as Error)?.message ?? String(err)
  process.stderr.write(`error [${code}]: ${message.split('\n')[0]}\n`)
  if (!known && process.env.DEBUG != null) process.stderr.write(`${(err as Error)?.stack}\n`)
  if (json) process.stdout.write(JSON.stringify({ error: { code, message } }) + '\n')
  return known ? err.exitCode : ExitCode.Failure
}
