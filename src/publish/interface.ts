import { CollectiveError, ExitCode } from '../errors.js'
import type { CID } from 'multiformats/cid'

/** A signed manifest larger than this is refused before it is parsed. */
export const MAX_ENVELOPE_BYTES = 64 * 1024

export const MANIFEST_FORMAT = 'collective-appliance'
export const MANIFEST_FORMAT_VERSION = 1

/** The self-certifying part of an appliance: its id is the CID of this document. */
export interface Genesis {
  name: string
  /** Ed25519 public keys, libp2p protobuf encoding. */
  keys: Uint8Array[]
  threshold: number
}

/** A key rotation (TUF root rotation): signed by a threshold of the previous set and of the new one. */
export interface Rotation {
  /** 1 for the first rotation after genesis, then 2, 3, ... */
  seq: number
  keys: Uint8Array[]
  threshold: number
  signatures: Signature[]
}

export interface Signature {
  key: Uint8Array
  sig: Uint8Array
}

export interface DiskRef {
  name: string
  role: 'program' | 'user'
  root: CID
  size: number
  format: 'raw'
}

/** A content-addressed file (kernel, initrd): a disk DAG of its bytes. */
export interface BlobRef {
  root: CID
  size: number
}

export interface PortForward {
  host: number
  guest: number
  proto: 'tcp' | 'udp'
}

export interface VmSpec {
  arch: 'x86_64'
  /** Bytes. */
  memory: number
  cpus: number
  kernel?: BlobRef
  initrd?: BlobRef
  cmdline?: string
  nics: Array<{ model: 'virtio-net', forwards: PortForward[] }>
}

export interface ConfigParam {
  name: string
  type: 'string' | 'int' | 'bool'
  default?: string | number | boolean
  description?: string
  secret: boolean
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT
  formatVersion: typeof MANIFEST_FORMAT_VERSION
  /** CID of `genesis` (dag-cbor, BLAKE3). */
  id: CID
  name: string
  /** Strictly increasing. */
  version: number
  /** Unix seconds. */
  created: number
  expires: number
  genesis: Genesis
  /** The signing keys of this version (after `rotations`). */
  keys: Uint8Array[]
  threshold: number
  rotations: Rotation[]
  disks: DiskRef[]
  vm: VmSpec
  config: ConfigParam[]
  /**
   * The order in which a boot first reads the disks (recorded by `run --record-profile`): a blob
   * (dag-cbor `{version: 1, reads: [[disk, offset, length], ...]}`) hosts prefetch first.
   */
  bootProfile?: BlobRef
}

/** What travels: the manifest's exact bytes and the signatures over them. */
export interface Envelope {
  manifest: Uint8Array
  signatures: Signature[]
}

/** A verified announcement. */
export interface Verified {
  manifest: Manifest
  envelope: Uint8Array
  /** CID of the envelope block. */
  cid: CID
}

export class InvalidManifestError extends CollectiveError {
  static readonly code = 'ERR_INVALID_MANIFEST'
  override readonly name = 'InvalidManifestError'
  constructor (message: string) { super(message, InvalidManifestError.code, ExitCode.BadInput) }
}

export class ManifestTooLargeError extends CollectiveError {
  static readonly code = 'ERR_MANIFEST_TOO_LARGE'
  override readonly name = 'ManifestTooLargeError'
  constructor (message: string) { super(message, ManifestTooLargeError.code, ExitCode.BadInput) }
}

export class SignatureError extends CollectiveError {
  static readonly code = 'ERR_BAD_SIGNATURE'
  override readonly name = 'SignatureError'
  constructor (message: string) { super(message, SignatureError.code, ExitCode.Corrupt) }
}

export class UntrustedKeyError extends CollectiveError {
  static readonly code = 'ERR_UNTRUSTED_KEY'
  override readonly name = 'UntrustedKeyError'
  constructor (message: string) { super(message, UntrustedKeyError.code, ExitCode.Corrupt) }
}

export class ThresholdError extends CollectiveError {
  static readonly code = 'ERR_THRESHOLD'
  override readonly name = 'ThresholdError'
  constructor (message: string) { super(message, ThresholdError.code, ExitCode.Corrupt) }
}

export class StaleVersionError extends CollectiveError {
  static readonly code = 'ERR_STALE_VERSION'
  override readonly name = 'StaleVersionError'
  constructor (message: string) { super(message, StaleVersionError.code, ExitCode.Corrupt) }
}

export class ExpiredError extends CollectiveError {
  static readonly code = 'ERR_EXPIRED'
  override readonly name = 'ExpiredError'
  constructor (message: string) { super(message, ExpiredError.code, ExitCode.Corrupt) }
}

export class WrongApplianceError extends CollectiveError {
  static readonly code = 'ERR_WRONG_APPLIANCE'
  override readonly name = 'WrongApplianceError'
  constructor (message: string) { super(message, WrongApplianceError.code, ExitCode.Corrupt) }
}

export class KeyNotFoundError extends CollectiveError {
  static readonly code = 'ERR_KEY_NOT_FOUND'
  override readonly name = 'KeyNotFoundError'
  constructor (message: string) { super(message, KeyNotFoundError.code, ExitCode.NotFound) }
}

export class KeyExistsError extends CollectiveError {
  static readonly code = 'ERR_KEY_EXISTS'
  override readonly name = 'KeyExistsError'
  constructor (message: string) { super(message, KeyExistsError.code, ExitCode.Usage) }
}

export class ApplianceNotFoundError extends CollectiveError {
  static readonly code = 'ERR_APPLIANCE_NOT_FOUND'
  override readonly name = 'ApplianceNotFoundError'
  constructor (message: string) { super(message, ApplianceNotFoundError.code, ExitCode.NotFound) }
}

export class KeyNotListedError extends CollectiveError {
  static readonly code = 'ERR_KEY_NOT_LISTED'
  override readonly name = 'KeyNotListedError'
  constructor (message: string) { super(message, KeyNotListedError.code, ExitCode.Usage) }
}

export class AlreadySignedError extends CollectiveError {
  static readonly code = 'ERR_ALREADY_SIGNED'
  override readonly name = 'AlreadySignedError'
  constructor (message: string) { super(message, AlreadySignedError.code, ExitCode.Usage) }
}
