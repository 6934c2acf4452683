import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { CollectiveError, ExitCode, fromSystemError, isSystemError } from '../errors.js'
import type { PrivateKey } from '@libp2p/interface'

/** The peer key's file name inside the data dir. */
export const PEER_KEY_FILE = 'peer.key'

/** Owner read/write only: the key is the host's identity in the swarm. */
const PEER_KEY_MODE = 0o600

export class InvalidPeerKeyError extends CollectiveError {
  static readonly code = 'ERR_INVALID_PEER_KEY'
  override readonly name = 'InvalidPeerKeyError'
  constructor (message: string, options?: ErrorOptions) { super(message, InvalidPeerKeyError.code, ExitCode.Corrupt, options) }
}

/**
 * The host's persistent ed25519 key (`<dataDir>/peer.key`, protobuf-encoded as libp2p does), created
 * on first use. Creation is atomic (written under a temporary name, then hard-linked into place), so
 * two processes starting at once on a fresh data dir agree on one key.
 */
export async function loadOrCreatePeerKey (dataDir: string, options: { signal?: AbortSignal } = {}): Promise<PrivateKey> {
  const path = join(dataDir, PEER_KEY_FILE)
  const existing = await readKey(path)
  if (existing != null) return existing
  options.signal?.throwIfAborted()
  try {
    await mkdir(dataDir, { recursive: true })
    const key = await generateKeyPair('Ed25519')
    const tmp = `${path}.${process.pid}.tmp`
    await writeFile(tmp, privateKeyToProtobuf(key), { mode: PEER_KEY_MODE, flush: true })
    try {
      await link(tmp, path)
    } catch (err) {
      if (!isSystemError(err, 'EEXIST')) throw err
    } finally {
      await unlink(tmp).catch(() => {})
    }
  } catch (err) {
    throw fromSystemError(err, path)
  }
  // Whoever linked first won; everyone reads the same file.
  const key = await readKey(path)
  if (key == null) throw new InvalidPeerKeyError(`${path}: vanished while being created`)
  return key
}

async function readKey (path: string): Promise<PrivateKey | undefined> {
  let bytes: Uint8Array
  try {
    bytes = await readFile(path)
    // A key readable by others is no longer private; tighten it rather than refuse to start.
    if (((await stat(path)).mode & 0o077) !== 0) await chmod(path, PEER_KEY_MODE)
  } catch (err) {
    if (isSystemError(err, 'ENOENT')) return undefined
    throw fromSystemError(err, path)
  }
  try {
    const key = privateKeyFromProtobuf(bytes)
    if (key.type !== 'Ed25519') throw new Error(`expected an Ed25519 key, found ${key.type}`)
    return key
  } catch (err) {
    throw new InvalidPeerKeyError(`${path}: not a valid peer key (${(err as Error).message}); move it away to create a new identity`, { cause: err })
  }
}
