import * as dagCbor from '@ipld/dag-cbor'
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { equals } from 'uint8arrays/equals'
import { cborCid } from '../dag/hash.js'
import { decodeEnvelope, decodeManifest, encodeEnvelope } from './manifest.js'
import { fingerprint } from './keys.js'
import {
  ExpiredError, InvalidManifestError, SignatureError, StaleVersionError, ThresholdError, UntrustedKeyError, WrongApplianceError,
  type Envelope, type Manifest, type Rotation, type Signature, type Verified
} from './interface.js'
import type { PrivateKey } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

// Domain separation: a signature over a manifest can never pass for a rotation, or for anything else
// the same key signs.
const MANIFEST_DOMAIN = new TextEncoder().encode('collective-peer/manifest/v1\0')
const ROTATION_DOMAIN = new TextEncoder().encode('collective-peer/rotation/v1\0')

/** Clocks disagree: a manifest created up to this far in the future (seconds) is still taken. */
export const CLOCK_SKEW = 600

function concat (a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

function rotationPayload (id: CID, r: Pick<Rotation, 'seq' | 'keys' | 'threshold'>): Uint8Array {
  return concat(ROTATION_DOMAIN, dagCbor.encode({ id, seq: r.seq, keys: r.keys, threshold: r.threshold }))
}

async function sign (payload: Uint8Array, keys: PrivateKey[]): Promise<Signature[]> {
  // Keys are named by libp2p's protobuf encoding: the same bytes manifests list them with.
  return await Promise.all(keys.map(async key => ({ key: publicKeyToProtobuf(key.publicKey), sig: await key.sign(payload) })))
}

/** Signs manifest bytes with each key: the envelope that is announced. */
export async function signManifest (manifest: Uint8Array, keys: PrivateKey[]): Promise<Uint8Array> {
  return encodeEnvelope({ manifest, signatures: await sign(concat(MANIFEST_DOMAIN, manifest), keys) })
}

/** Adds signatures to an envelope (a threshold of publishers signing one after another). */
export async function addSignatures (envelope: Uint8Array, keys: PrivateKey[]): Promise<Uint8Array> {
  const e = decodeEnvelope(envelope)
  const fresh = await sign(concat(MANIFEST_DOMAIN, e.manifest), keys)
  const signatures = [...e.signatures.filter(s => !fresh.some(f => equals(f.key, s.key))), ...fresh]
  return encodeEnvelope({ manifest: e.manifest, signatures })
}

/** A rotation to `keys`/`threshold`, signed by the old keys and the new ones (both thresholds must hold). */
export async function signRotation (id: CID, rotation: Pick<Rotation, 'seq' | 'keys' | 'threshold'>, signers: PrivateKey[]): Promise<Rotation> {
  return { ...rotation, signatures: await sign(rotationPayload(id, rotation), signers) }
}

/** The key set a host trusts for an appliance, and the last rotation it applied. */
export interface TrustedKeys {
  keys: Uint8Array[]
  threshold: number
  seq: number
}

/**
 * Distinct trusted keys with a valid signature over `payload`. A signature by a trusted key that
 * does not verify is an error (someone tampered); signatures by other keys are counted apart.
 */
async function countSigners (payload: Uint8Array, signatures: Signature[], trusted: Uint8Array[], what: string): Promise<{ valid: Uint8Array[], unknown: Uint8Array[] }> {
  const seen: Uint8Array[] = []
  const unknown: Uint8Array[] = []
  for (const s of signatures) {
    if (!trusted.some(k => equals(k, s.key))) { unknown.push(s.key); continue }
    if (seen.some(k => equals(k, s.key))) continue // the same key twice counts once
    let ok = false
    try {
      ok = await publicKeyFromProtobuf(s.key).verify(payload, s.sig)
    } catch {
      ok = false
    }
    if (!ok) throw new SignatureError(`${what}: bad signature by ${fingerprint(s.key)}`)
    seen.push(s.key)
  }
  return { valid: seen, unknown }
}

async function requireThreshold (payload: Uint8Array, signatures: Signature[], keys: Uint8Array[], threshold: number, what: string): Promise<void> {
  const { valid, unknown } = await countSigners(payload, signatures, keys, what)
  thresholdMet(valid.length, unknown.length, threshold, what)
}

function thresholdMet (valid: number, unknown: number, threshold: number, what: string): void {
  if (valid >= threshold) return
  if (valid === 0 && unknown > 0) throw new UntrustedKeyError(`${what}: signed only by keys this host does not trust`)
  throw new ThresholdError(`${what}: ${valid} of the ${threshold} signatures required by distinct trusted keys`)
}

function sameKeys (a: Uint8Array[], b: Uint8Array[]): boolean {
  return a.length === b.length && a.every(k => b.some(j => equals(j, k)))
}

/** A signed manifest checked in every way but the number of signatures (`inspectEnvelope`). */
export interface Inspected extends Verified {
  /** The key set to trust from now on (after the manifest's rotations). */
  trust: TrustedKeys
  /** Distinct trusted keys whose signature over the manifest verifies. */
  signers: Uint8Array[]
  /** Keys of signatures that the manifest's key set does not list (ignored by hosts). */
  strangers: Uint8Array[]
}

/**
 * Everything `verifyEnvelope` checks except the threshold of the manifest's own signatures: size,
 * dag-cbor, schema, id, the key chain (each rotation fully signed), the signing keys being where the
 * chain leads, and every signature by a listed key verifying. For a manifest that is still being
 * signed by several publishers, one after another (`sign`), and to tell how many more it needs.
 */
export async function inspectEnvelope (bytes: Uint8Array, options: { id?: CID, trusted?: TrustedKeys } = {}): Promise<Inspected> {
  const envelope: Envelope = decodeEnvelope(bytes)
  const manifest: Manifest = decodeManifest(envelope.manifest)
  const label = `${manifest.name} v${manifest.version}`
  if (options.id != null && !manifest.id.equals(options.id)) throw new WrongApplianceError(`${label} is appliance ${manifest.id}, not ${options.id}`)
  let trust: TrustedKeys = options.trusted ?? { keys: manifest.genesis.keys, threshold: manifest.genesis.threshold, seq: 0 }
  let previous = 0
  for (const r of manifest.rotations) {
    if (r.seq <= previous) throw new InvalidManifestError(`${label}: rotations out of order`)
    previous = r.seq
    if (r.seq <= trust.seq) continue
    if (r.seq !== trust.seq + 1) throw new InvalidManifestError(`${label}: rotation ${r.seq} follows ${trust.seq}: the chain has a gap`)
    const payload = rotationPayload(manifest.id, r)
    await requireThreshold(payload, r.signatures, trust.keys, trust.threshold, `${label}: key rotation ${r.seq} (old keys)`)
    await requireThreshold(payload, r.signatures, r.keys, r.threshold, `${label}: key rotation ${r.seq} (new keys)`)
    trust = { keys: r.keys, threshold: r.threshold, seq: r.seq }
  }
  if (!sameKeys(manifest.keys, trust.keys) || manifest.threshold !== trust.threshold) {
    throw new UntrustedKeyError(`${label}: its signing keys are not the ones this host trusts (no valid rotation leads to them)`)
  }
  const { valid, unknown } = await countSigners(concat(MANIFEST_DOMAIN, envelope.manifest), envelope.signatures, trust.keys, label)
  return { manifest, envelope: bytes, cid: cborCid(bytes), trust, signers: valid, strangers: unknown }
}

/**
 * Verifies a signed manifest from an untrusted source: size, dag-cbor, schema, the id (the CID of
 * the genesis document), the key rotations from what the host trusts (each signed by a threshold of
 * the old keys and of the new), the signatures (a threshold of distinct trusted keys). Returns the
 * manifest and the key set to trust from now on. Version and expiry are checked by `checkFresh`.
 */
export async function verifyEnvelope (bytes: Uint8Array, options: { id?: CID, trusted?: TrustedKeys } = {}): Promise<Verified & { trust: TrustedKeys }> {
  const inspected = await inspectEnvelope(bytes, options)
  const { manifest, trust } = inspected
  thresholdMet(inspected.signers.length, inspected.strangers.length, trust.threshold, `${manifest.name} v${manifest.version}`)
  return { manifest, envelope: bytes, cid: inspected.cid, trust }
}

/** Refuses a version not above the last one seen (rollback, replay) and an expired manifest. */
export function checkFresh (manifest: Manifest, lastVersion: number, now = Math.floor(Date.now() / 1000)): void {
  const label = `${manifest.name} v${manifest.version}`
  if (manifest.version <= lastVersion) throw new StaleVersionError(`${label}: not newer than v${lastVersion} (replay or rollback)`)
  if (manifest.expires <= now) throw new ExpiredError(`${label}: expired at ${new Date(manifest.expires * 1000).toISOString()}`)
  if (manifest.created > now + CLOCK_SKEW) throw new InvalidManifestError(`${label}: created in the future (${new Date(manifest.created * 1000).toISOString()})`)
}
