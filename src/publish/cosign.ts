import { open, unlink } from 'node:fs/promises'
import { equals } from 'uint8arrays/equals'
import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { fromSystemError } from '../errors.js'
import { addSignatures, checkFresh, inspectEnvelope, type Inspected, type TrustedKeys } from './signing.js'
import { fingerprint } from './keys.js'
import { writeAtomic } from './state.js'
import { AlreadySignedError, KeyNotListedError, MAX_ENVELOPE_BYTES, ManifestTooLargeError, UntrustedKeyError } from './interface.js'
import type { PrivateKey } from '@libp2p/interface'

/**
 * Reads a signed manifest file (`publish --out`), refusing one over MAX_ENVELOPE_BYTES before
 * reading it whole: the same limit hosts apply to what they receive.
 */
export async function readManifestFile (path: string): Promise<Uint8Array> {
  let fd
  try {
    fd = await open(path, 'r')
    const { size } = await fd.stat()
    if (size > MAX_ENVELOPE_BYTES) throw new ManifestTooLargeError(`${path}: ${size} bytes, over the ${MAX_ENVELOPE_BYTES}-byte limit of a signed manifest`)
    const bytes = new Uint8Array(size)
    let at = 0
    while (at < size) {
      const { bytesRead } = await fd.read(bytes, at, size - at, at)
      if (bytesRead === 0) break
      at += bytesRead
    }
    return bytes.subarray(0, at)
  } catch (err) {
    throw fromSystemError(err, path)
  } finally {
    await fd?.close()
  }
}

/** Writes a signed manifest file atomically (fsync, rename): a reader sees the old file or the new one. */
export async function writeManifestFile (path: string, envelope: Uint8Array): Promise<void> {
  try {
    await writeAtomic(path, envelope, 0o644)
  } catch (err) {
    await unlink(`${path}.${process.pid}.tmp`).catch(() => {})
    throw fromSystemError(err, path)
  }
}

export interface CosignResult extends Inspected {
  /** Fingerprints of the keys that signed now. */
  added: string[]
}

/**
 * Adds signatures to a partly signed manifest, after checking it as a host would except for the
 * number of signatures (`inspectEnvelope`: size, schema, id, key chain, every signature so far valid),
 * against `trusted` when this host already trusts keys for the appliance, and refusing an expired
 * manifest or one not above `lastVersion`. Refuses signatures by keys the manifest does not list
 * (ERR_UNTRUSTED_KEY), a key it does not list (ERR_KEY_NOT_LISTED) and a key that signed already
 * (ERR_ALREADY_SIGNED).
 */
export async function cosignEnvelope (envelope: Uint8Array, keys: PrivateKey[], options: { trusted?: TrustedKeys, lastVersion?: number } = {}): Promise<CosignResult> {
  const before = await inspectEnvelope(envelope, { trusted: options.trusted })
  const { manifest, trust } = before
  const label = `${manifest.name} v${manifest.version}`
  if (before.strangers.length > 0) {
    throw new UntrustedKeyError(`${label}: signed by ${before.strangers.map(k => fingerprint(k)).join(', ')}, not one of its keys`)
  }
  checkFresh(manifest, options.lastVersion ?? 0)
  const adding: PrivateKey[] = []
  for (const key of keys) {
    const pub = publicKeyToProtobuf(key.publicKey)
    if (!trust.keys.some(k => equals(k, pub))) {
      throw new KeyNotListedError(`key ${fingerprint(pub)} is not one of ${label}'s keys (${trust.keys.map(k => fingerprint(k)).join(', ')})`)
    }
    if (before.signers.some(k => equals(k, pub)) || adding.some(k => equals(publicKeyToProtobuf(k.publicKey), pub))) {
      throw new AlreadySignedError(`${label} is signed by ${fingerprint(pub)} already`)
    }
    adding.push(key)
  }
  const after = await inspectEnvelope(await addSignatures(envelope, adding), { trusted: options.trusted })
  return { ...after, added: adding.map(k => fingerprint(k.publicKey)) }
}
