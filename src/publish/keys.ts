import { chmod, mkdir, readFile, readdir, writeFile, link, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf, publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { fromSystemError, isSystemError, UsageError } from '../errors.js'
import { KeyExistsError, KeyNotFoundError } from './interface.js'
import type { PrivateKey, PublicKey } from '@libp2p/interface'

/** Publisher keys live in `<dataDir>/keys/<name>.key`, owner-only. */
export const KEYS_DIR = 'keys'
const NAME = /^[A-Za-z0-9._-]{1,64}$/

/** A key's short public name: the libp2p peer id of the public key (`12D3Koo…`). */
export function fingerprint (key: PublicKey | Uint8Array): string {
  const pub = key instanceof Uint8Array ? publicKeyFromProtobuf(key) : key
  return peerIdFromPublicKey(pub).toString()
}

export function encodePublicKey (key: PublicKey): Uint8Array {
  return publicKeyToProtobuf(key)
}

/**
 * A publisher's public key as people pass it around: its fingerprint (`12D3Koo…`, which holds the
 * whole ed25519 key) or the base64 protobuf that `key export` prints. Returns the protobuf bytes.
 */
export function parsePublicKey (text: string): Uint8Array {
  let key: PublicKey | undefined
  try {
    key = /^[1-9A-HJ-NP-Za-km-z]{40,60}$/.test(text) ? peerIdFromString(text).publicKey : publicKeyFromProtobuf(new Uint8Array(Buffer.from(text, 'base64')))
  } catch {
    key = undefined
  }
  if (key?.type !== 'Ed25519') throw new UsageError(`"${text}" is not an ed25519 public key (a fingerprint 12D3Koo… or the base64 key that key export prints)`)
  return publicKeyToProtobuf(key)
}

export interface KeyInfo {
  name: string
  fingerprint: string
}

export class KeyStore {
  readonly dir: string

  constructor (dataDir: string) {
    this.dir = join(dataDir, KEYS_DIR)
  }

  private path (name: string): string {
    if (!NAME.test(name)) throw new UsageError(`invalid key name "${name}": letters, digits, . _ - (at most 64)`)
    return join(this.dir, `${name}.key`)
  }

  /** Creates an ed25519 key; never overwrites one (written aside, then linked into place). */
  async create (name: string): Promise<KeyInfo> {
    const path = this.path(name)
    const key = await generateKeyPair('Ed25519')
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 })
      const tmp = `${path}.${process.pid}.tmp`
      await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flush: true })
      try {
        await link(tmp, path)
      } catch (err) {
        if (isSystemError(err, 'EEXIST')) throw new KeyExistsError(`a key named "${name}" exists already`)
        throw err
      } finally {
        await unlink(tmp).catch(() => {})
      }
    } catch (err) {
      throw fromSystemError(err, path)
    }
    return { name, fingerprint: fingerprint(key.publicKey) }
  }

  async load (name: string): Promise<PrivateKey> {
    const path = this.path(name)
    let bytes: Uint8Array
    try {
      bytes = await readFile(path)
      await chmod(path, 0o600)
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) throw new KeyNotFoundError(`no key named "${name}" (create one: collective-peer key create --name ${name})`)
      throw fromSystemError(err, path)
    }
    return privateKeyFromProtobuf(bytes)
  }

  async list (): Promise<KeyInfo[]> {
    let names: string[]
    try {
      names = (await readdir(this.dir)).filter(n => n.endsWith('.key')).map(n => n.slice(0, -4)).sort()
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return []
      throw fromSystemError(err, this.dir)
    }
    const out: KeyInfo[] = []
    for (const name of names) out.push({ name, fingerprint: fingerprint((await this.load(name)).publicKey) })
    return out
  }
}
