import { compare } from 'uint8arrays/compare'
import { equals } from 'uint8arrays/equals'
import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { importImage } from '../dag/importer.js'
import { applianceId, decodeEnvelope, decodeManifest, encodeManifest } from './manifest.js'
import { checkFresh, inspectEnvelope, signManifest, signRotation, verifyEnvelope, type TrustedKeys } from './signing.js'
import { fromTrusted, toTrusted, type ApplianceState, type Appliances } from './state.js'
import { readApplianceFile } from './appliance-file.js'
import { fingerprint } from './keys.js'
import { pinName } from './pins.js'
import {
  KeyNotListedError, MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, StaleVersionError, ThresholdError,
  type BlobRef, type DiskRef, type Genesis, type Manifest, type Rotation, type Verified
} from './interface.js'
import { firstMissing, type Store } from '../store/index.js'
import { BlockMissingError, UsageError } from '../errors.js'
import type { PrivateKey } from '@libp2p/interface'

/** Default lifetime of a published version: hosts refuse it after this (re-publish to extend). */
export const DEFAULT_EXPIRY_DAYS = 30

export interface PublishOptions {
  store: Store
  appliances: Appliances
  /** The appliance file (appliance.json). */
  file: string
  /** Signing keys: a threshold of the appliance's current keys. */
  keys: PrivateKey[]
  /** Signatures required, for a new appliance (genesis). @default 1 */
  threshold?: number
  /** @default last version + 1 */
  version?: number
  expiresDays?: number
  /** Rotate to these keys (signed by `keys` and by them). */
  rotateTo?: PrivateKey[]
  rotateThreshold?: number
  /**
   * Public keys (libp2p protobuf) of co-publishers whose private keys are elsewhere: with `keys`,
   * they found a new appliance (its genesis keys). Only when this publish founds the appliance.
   */
  cosigners?: Uint8Array[]
  /**
   * Build and sign with `keys` only, for the other keys to sign after (`sign`, then `announce`): the
   * envelope may be below the threshold; its disks are pinned (so gc keeps them until it is
   * announced) but it is not recorded as published.
   */
  draft?: boolean
  tmpDir: string
  signal?: AbortSignal
  onProgress?(event: { type: 'publish:import', file: string, done: number, size: number }): void
}

export interface PublishResult {
  manifest: Manifest
  envelope: Uint8Array
  bytesStored: number
  /** Fingerprints of the keys that signed it so far, and how many it needs. */
  signers: string[]
  threshold: number
  /** Recorded as this host's latest published version (false for a draft). */
  recorded: boolean
}

const sortKeys = (keys: Uint8Array[]): Uint8Array[] => [...keys].sort(compare)

/**
 * Builds, signs and records a new version of an appliance: imports its disks and boot files
 * (blocks already stored are reused), writes the manifest, signs it, checks it as a host would,
 * pins its disks and saves it as the current version. Announcing is the caller's (the daemon's).
 */
export async function publishVersion (options: PublishOptions): Promise<PublishResult> {
  const spec = await readApplianceFile(options.file)
  const signing = sortKeys(distinct(options.keys.map(k => publicKeyToProtobuf(k.publicKey))))
  // A name already published from here continues that appliance; otherwise the keys found a new one.
  const existing = (await options.appliances.list()).find(s => s.published && s.name === spec.name)
  let genesis: Genesis
  let trust: TrustedKeys
  let rotations: Rotation[] = []
  if (existing?.current != null) {
    if (options.cosigners != null && options.cosigners.length > 0) throw new UsageError(`${spec.name} was founded already: its keys are in its genesis (--cosigner only founds an appliance)`)
    const previous = decodeManifest(decodeEnvelope(await options.appliances.envelope(existing.id, existing.lastVersion)).manifest)
    genesis = previous.genesis
    rotations = previous.rotations
    trust = toTrusted(existing.trust!)
  } else {
    const keys = sortKeys(distinct([...signing, ...(options.cosigners ?? [])]))
    genesis = { name: spec.name, keys, threshold: options.threshold ?? 1 }
    if (genesis.threshold > keys.length) throw new ThresholdError(`threshold ${genesis.threshold} needs as many keys (--key, --cosigner); there are ${keys.length}`)
    trust = { keys: genesis.keys, threshold: genesis.threshold, seq: 0 }
  }
  const id = applianceId(genesis)
  const lastVersion = existing?.lastVersion ?? 0
  const version = options.version ?? lastVersion + 1
  if (version <= lastVersion) throw new StaleVersionError(`version ${version} is not above the last published one (${lastVersion})`)

  let signers = options.keys
  if (options.rotateTo != null && options.rotateTo.length > 0) {
    const keys = sortKeys(options.rotateTo.map(k => publicKeyToProtobuf(k.publicKey)))
    const threshold = options.rotateThreshold ?? 1
    const rotation = await signRotation(id, { seq: trust.seq + 1, keys, threshold }, [...options.keys, ...options.rotateTo])
    rotations = [...rotations, rotation]
    trust = { keys, threshold, seq: rotation.seq }
    signers = options.rotateTo
  } else {
    // Before importing anything: keys that cannot sign, or too few of them to announce.
    const stranger = signing.find(k => !trust.keys.some(t => equals(t, k)))
    if (stranger != null) throw new KeyNotListedError(`key ${fingerprint(stranger)} is not one of ${spec.name}'s keys (${trust.keys.map(k => fingerprint(k)).join(', ')})`)
    if (signing.length < trust.threshold && options.draft !== true) {
      throw new ThresholdError(`${spec.name} needs ${trust.threshold} signatures and the keys here give ${signing.length}: write a partly signed manifest with --no-announce --out FILE, have the other keys sign it (collective-peer sign FILE), then collective-peer announce FILE`)
    }
  }

  let bytesStored = 0
  const importFile = async (file: string): Promise<BlobRef> => {
    const r = await importImage(options.store.blocks, file, {
      format: 'raw',
      tmpDir: options.tmpDir,
      signal: options.signal,
      onProgress: e => { if (e.type === 'import:progress') options.onProgress?.({ type: 'publish:import', file, done: e.scanned, size: e.size }) }
    })
    bytesStored += r.bytesStored
    return { root: r.root, size: r.size }
  }
  const disks: DiskRef[] = []
  for (const d of spec.disks) {
    const blob = await importFile(d.image)
    disks.push({ name: d.name, role: d.role, root: blob.root, size: blob.size, format: 'raw' })
  }
  const now = Math.floor(Date.now() / 1000)
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    formatVersion: MANIFEST_FORMAT_VERSION,
    id,
    name: spec.name,
    version,
    created: now,
    expires: now + Math.round((options.expiresDays ?? DEFAULT_EXPIRY_DAYS) * 86400),
    genesis,
    keys: trust.keys,
    threshold: trust.threshold,
    rotations,
    disks,
    vm: {
      arch: 'x86_64',
      memory: spec.vm.memory,
      cpus: spec.vm.cpus,
      kernel: spec.vm.kernel != null ? await importFile(spec.vm.kernel) : undefined,
      initrd: spec.vm.initrd != null ? await importFile(spec.vm.initrd) : undefined,
      cmdline: spec.vm.cmdline,
      nics: [{ model: 'virtio-net', forwards: spec.vm.forwards }]
    },
    config: spec.config,
    bootProfile: spec.bootProfile != null ? await importFile(spec.bootProfile) : undefined
  }
  const envelope = await signManifest(encodeManifest(manifest), signers)
  const trusted = existing?.trust != null ? toTrusted(existing.trust) : undefined
  if (options.draft === true) {
    // Checked as a host will, but for the signatures still to come; pinned so gc keeps its blocks.
    const inspected = await inspectEnvelope(envelope, { id, trusted })
    await pinVersion(options.store, inspected.manifest)
    return { manifest: inspected.manifest, envelope, bytesStored, signers: inspected.signers.map(k => fingerprint(k)), threshold: inspected.trust.threshold, recorded: false }
  }
  // Check it exactly as a host will: a publisher never announces what hosts would refuse.
  const verified = await verifyEnvelope(envelope, { id, trusted })
  await recordPublished(options.store, options.appliances, verified, existing)
  const signed = (await inspectEnvelope(envelope, { id, trusted })).signers
  return { manifest: verified.manifest, envelope, bytesStored, signers: signed.map(k => fingerprint(k)), threshold: verified.trust.threshold, recorded: true }
}

function distinct (keys: Uint8Array[]): Uint8Array[] {
  return keys.filter((k, i) => keys.findIndex(j => equals(j, k)) === i)
}

/**
 * Records a verified, fully signed version as this host's latest published one: pins its disks and
 * boot files, saves the envelope (`appliances/<id>/v<N>.manifest`), makes it current and logs it.
 * The daemon announces it now and re-announces the latest version every few minutes.
 */
export async function recordPublished (store: Store, appliances: Appliances, verified: Verified & { trust: TrustedKeys }, existing?: ApplianceState): Promise<ApplianceState> {
  const { manifest, envelope } = verified
  const { version } = manifest
  const pins = await pinVersion(store, manifest)
  const state: ApplianceState = existing ?? { id: manifest.id.toString(), name: manifest.name, subscribed: false, published: true, lastVersion: 0, versions: [] }
  await appliances.saveEnvelope(state.id, version, envelope)
  state.published = true
  state.trust = fromTrusted(verified.trust)
  state.lastVersion = Math.max(state.lastVersion, version)
  state.versions = state.versions.filter(v => v.version !== version)
  state.versions.push({ version, created: manifest.created, expires: manifest.expires, fetched: true, pins })
  if (state.current !== version) {
    state.previous = state.current
    state.current = version
  }
  await appliances.save(state)
  await appliances.log({ type: 'published', id: state.id, version })
  return state
}

export interface AdoptResult {
  manifest: Manifest
  envelope: Uint8Array
  signers: string[]
  threshold: number
  /** False when this very envelope was recorded already (announced again, nothing else done). */
  recorded: boolean
}

/**
 * Takes a signed manifest written elsewhere (`publish --no-announce --out`, then `sign` by the other
 * keys) for announcing from this host: verifies it as a host would, against the keys this host
 * trusts for the appliance if it knows it (so below the threshold is ERR_THRESHOLD), refuses a
 * version not above the last one recorded here (the very same envelope is taken again, for a
 * re-announcement) and an expired one, requires every disk and boot file complete in the store
 * (this host serves them), then records it like `publishVersion`.
 */
export async function adoptVersion (options: { store: Store, appliances: Appliances, envelope: Uint8Array, signal?: AbortSignal }): Promise<AdoptResult> {
  const { store, appliances, envelope } = options
  const { manifest: claimed } = await inspectEnvelope(envelope)
  const existing = await appliances.get(claimed.id.toString())
  const trusted = existing?.trust != null ? toTrusted(existing.trust) : undefined
  const verified = await verifyEnvelope(envelope, { id: claimed.id, trusted })
  const { manifest } = verified
  const signers = (await inspectEnvelope(envelope, { id: claimed.id, trusted })).signers.map(k => fingerprint(k))
  const threshold = verified.trust.threshold
  if (existing != null && manifest.version === existing.lastVersion) {
    const known = await appliances.envelope(existing.id, manifest.version).catch(() => undefined)
    if (known != null && equals(known, envelope) && existing.published && existing.versions.some(v => v.version === manifest.version && v.fetched)) {
      checkFresh(manifest, manifest.version - 1)
      return { manifest, envelope, signers, threshold, recorded: false }
    }
  }
  checkFresh(manifest, existing?.lastVersion ?? 0)
  for (const [part, blob] of parts(manifest)) {
    const missing = await firstMissing(store.blocks, blob.root, options.signal)
    if (missing != null) throw new BlockMissingError(`${manifest.name} v${manifest.version}: ${part} (${blob.root}) is not complete in this store (block ${missing} missing): announce from the host that published it, or pull it first`)
  }
  await recordPublished(store, appliances, verified, existing)
  return { manifest, envelope, signers, threshold, recorded: true }
}

function parts (manifest: Manifest): Array<[string, BlobRef]> {
  const out: Array<[string, BlobRef]> = manifest.disks.map(d => [d.name, d])
  if (manifest.vm.kernel != null) out.push(['kernel', manifest.vm.kernel])
  if (manifest.vm.initrd != null) out.push(['initrd', manifest.vm.initrd])
  if (manifest.bootProfile != null) out.push(['profile', manifest.bootProfile])
  return out
}

/** Pins every disk and boot file of a version (its blocks are all in the store). */
export async function pinVersion (store: Store, manifest: Manifest): Promise<string[]> {
  const names: string[] = []
  for (const [part, blob] of parts(manifest)) {
    const name = pinName(manifest.id.toString(), manifest.version, part)
    await store.pins.set({ name, root: blob.root.toString(), size: blob.size, created: new Date().toISOString() })
    names.push(name)
  }
  return names
}
