import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { CollectiveError, ExitCode, isSystemError, fromSystemError } from '../errors.js'

/** The config file's name inside the data dir. */
export const CONFIG_FILE = 'config.json'

/** Listen on every interface, on a port the kernel picks: two hosts on one machine never clash. */
export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/0']

/** mDNS finds hosts on the same LAN without any configuration. */
export const DEFAULT_MDNS = true

/** A config file larger than this is not a config file. */
const MAX_CONFIG_BYTES = 1024 * 1024

/** How the host joins the swarm. */
export interface NetConfig {
  /** Multiaddrs to listen on. @default DEFAULT_LISTEN */
  listen: string[]
  /** Multiaddrs of peers dialled at start (`/ip4/…/tcp/…/p2p/<peer id>`). @default [] */
  bootstrap: string[]
  /** Discover peers on the LAN with multicast DNS. @default DEFAULT_MDNS */
  mdns: boolean
}

/** Values given on the command line; a missing one falls back to the environment, then the file. */
export interface NetConfigFlags {
  listen?: string[]
  bootstrap?: string[]
  mdns?: boolean
}

export class InvalidConfigError extends CollectiveError {
  static readonly code = 'ERR_INVALID_CONFIG'
  override readonly name = 'InvalidConfigError'
  constructor (message: string, options?: ErrorOptions) { super(message, InvalidConfigError.code, ExitCode.Usage, options) }
}

/**
 * The network configuration: flags win over the environment (`COLLECTIVE_LISTEN`,
 * `COLLECTIVE_BOOTSTRAP`, comma-separated; `COLLECTIVE_MDNS=0|1`) which wins over
 * `<dataDir>/config.json` (`{"listen": [...], "bootstrap": [...], "mdns": bool}`), each key on its own.
 */
export async function loadNetConfig (dataDir: string, flags: NetConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Promise<NetConfig> {
  const file = await readConfigFile(join(dataDir, CONFIG_FILE))
  const config: NetConfig = {
    listen: flags.listen ?? envList(env.COLLECTIVE_LISTEN) ?? file.listen ?? DEFAULT_LISTEN,
    bootstrap: flags.bootstrap ?? envList(env.COLLECTIVE_BOOTSTRAP) ?? file.bootstrap ?? [],
    mdns: flags.mdns ?? envBoolean(env.COLLECTIVE_MDNS) ?? file.mdns ?? DEFAULT_MDNS
  }
  for (const [key, list] of [['listen', config.listen], ['bootstrap', config.bootstrap]] as const) {
    for (const addr of list) checkMultiaddr(addr, key)
  }
  if (config.listen.length === 0) throw new InvalidConfigError('no listen address (give --listen MULTIADDR)')
  return config
}

function checkMultiaddr (text: string, what: string): void {
  try {
    multiaddr(text)
  } catch (err) {
    throw new InvalidConfigError(`${what} address "${text}" is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/4001)`, { cause: err })
  }
}

function envList (value: string | undefined): string[] | undefined {
  if (value == null || value.trim() === '') return undefined
  return value.split(',').map(s => s.trim()).filter(s => s !== '')
}

function envBoolean (value: string | undefined): boolean | undefined {
  if (value == null || value === '') return undefined
  if (/^(1|true|yes|on)$/i.test(value)) return true
  if (/^(0|false|no|off)$/i.test(value)) return false
  throw new InvalidConfigError(`COLLECTIVE_MDNS="${value}" is not a boolean (0 or 1)`)
}

async function readConfigFile (path: string): Promise<Partial<NetConfig>> {
  let text: string
  try {
    const bytes = await readFile(path)
    if (bytes.length > MAX_CONFIG_BYTES) throw new InvalidConfigError(`${path}: larger than ${MAX_CONFIG_BYTES} bytes`)
    text = bytes.toString('utf8')
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return {}
    throw fromSystemError(err, path)
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new InvalidConfigError(`${path}: not valid JSON (${(err as Error).message})`, { cause: err })
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidConfigError(`${path}: expected a JSON object`)
  const object = value as Record<string, unknown>
  const out: Partial<NetConfig> = {}
  for (const key of ['listen', 'bootstrap'] as const) {
    const list = object[key]
    if (list === undefined) continue
    if (!Array.isArray(list) || !list.every(a => typeof a === 'string')) throw new InvalidConfigError(`${path}: "${key}" must be an array of multiaddr strings`)
    out[key] = list
  }
  if (object.mdns !== undefined) {
    if (typeof object.mdns !== 'boolean') throw new InvalidConfigError(`${path}: "mdns" must be true or false`)
    out.mdns = object.mdns
  }
  return out
}
