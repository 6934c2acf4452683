import { compare } from 'uint8arrays/compare'
import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { importImage } from '../dag/importer.js'
import { applianceId, decodeEnvelope, decodeManifest, encodeManifest } from './manifest.js'
import { signManifest, signRotation, verifyEnvelope, type TrustedKeys } from './signing.js'
import { fromTrusted, toTrusted, type ApplianceState, type Appliances } from './state.js'
import { readApplianceFile } from './appliance-file.js'
import { pinName } from './pins.js'
import { MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, StaleVersionError, ThresholdError, type BlobRef, type DiskRef, type Genesis, type Manifest, type Rotation } from './interface.js'
import type { Store } from '../store/index.js'
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
  tmpDir: string
  signal?: AbortSignal
  onProgress?(event: { type: 'publish:import', file: string, done: number, size: number }): void
}

export interface PublishResult {
  manifest: Manifest
  envelope: Uint8Array
  bytesStored: number
}

const sortKeys = (keys: Uint8Array[]): Uint8Array[] => [...keys].sort(compare)

/**
 * Builds, signs and records a new version of an appliance: imports its disks and boot files
 * (blocks already stored are reused), writes the manifest, signs it, checks it as a host would,
 * pins its disks and saves it as the current version. Announcing is the caller's (the daemon's).
 */
export async function publishVersion (options: PublishOptions): Promise<PublishResult> {
  const spec = await readApplianceFile(options.file)
  const signing = sortKeys(options.keys.map(k => publicKeyToProtobuf(k.publicKey)))
  // A name already published from here continues that appliance; otherwise the keys found a new one.
  const existing = (await options.appliances.list()).find(s => s.published && s.name === spec.name)
  let genesis: Genesis
  let trust: TrustedKeys
  let rotations: Rotation[] = []
  if (existing?.current != null) {
    const previous = decodeManifest(decodeEnvelope(await options.appliances.envelope(existing.id, existing.lastVersion)).manifest)
    genesis = previous.genesis
    rotations = previous.rotations
    trust = toTrusted(existing.trust!)
  } else {
    genesis = { name: spec.name, keys: signing, threshold: options.threshold ?? 1 }
    if (genesis.threshold > signing.length) throw new ThresholdError(`threshold ${genesis.threshold} needs as many --key`)
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
  // Check it exactly as a host will: a publisher never announces what hosts would refuse.
  const verified = await verifyEnvelope(envelope, { id, trusted: existing?.trust != null ? toTrusted(existing.trust) : undefined })

  const pins = await pinVersion(options.store, verified.manifest)
  const state: ApplianceState = existing ?? { id: id.toString(), name: spec.name, subscribed: false, published: true, lastVersion: 0, versions: [] }
  await options.appliances.saveEnvelope(state.id, version, envelope)
  state.trust = fromTrusted(verified.trust)
  state.lastVersion = version
  state.versions.push({ version, created: manifest.created, expires: manifest.expires, fetched: true, pins })
  state.previous = state.current
  state.current = version
  await options.appliances.save(state)
  await options.appliances.log({ type: 'published', id: state.id, version })
  return { manifest: verified.manifest, envelope, bytesStored }
}

/** Pins every disk and boot file of a version (its blocks are all in the store). */
export async function pinVersion (store: Store, manifest: Manifest): Promise<string[]> {
  const parts: Array<[string, BlobRef]> = manifest.disks.map(d => [d.name, d])
  if (manifest.vm.kernel != null) parts.push(['kernel', manifest.vm.kernel])
  if (manifest.vm.initrd != null) parts.push(['initrd', manifest.vm.initrd])
  if (manifest.bootProfile != null) parts.push(['profile', manifest.bootProfile])
  const names: string[] = []
  for (const [part, blob] of parts) {
    const name = pinName(manifest.id.toString(), manifest.version, part)
    await store.pins.set({ name, root: blob.root.toString(), size: blob.size, created: new Date().toISOString() })
    names.push(name)
  }
  return names
}
