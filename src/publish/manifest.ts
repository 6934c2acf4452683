import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { BLAKE3_CODE, cborCid } from '../dag/hash.js'
import {
  InvalidManifestError, MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, MAX_ENVELOPE_BYTES, ManifestTooLargeError,
  type ConfigParam, type DiskRef, type Envelope, type Genesis, type Manifest, type Rotation, type Signature, type VmSpec
} from './interface.js'

/** Keys an appliance may name at once, and rotations a manifest may carry. */
const MAX_KEYS = 16
const MAX_ROTATIONS = 64
const MAX_DISKS = 16
const MAX_PARAMS = 128
const MAX_STRING = 4096
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** The appliance id: the CID of its genesis document. Same keys + name + threshold, same id. */
export function applianceId (genesis: Genesis): CID {
  return cborCid(dagCbor.encode(genesisValue(genesis)))
}

function genesisValue (g: Genesis): Record<string, unknown> {
  return { name: g.name, keys: g.keys, threshold: g.threshold }
}

export function encodeManifest (m: Manifest): Uint8Array {
  return dagCbor.encode(stripUndefined({ ...m, genesis: genesisValue(m.genesis) }))
}

export function encodeEnvelope (e: Envelope): Uint8Array {
  return dagCbor.encode({ manifest: e.manifest, signatures: e.signatures.map(s => ({ key: s.key, sig: s.sig })) })
}

// dag-cbor refuses undefined: optional fields are left out.
function stripUndefined (value: any): any {
  if (Array.isArray(value)) return value.map(stripUndefined)
  if (value == null || typeof value !== 'object' || value instanceof Uint8Array || CID.asCID(value) != null) return value
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, stripUndefined(v)]))
}

/** Decodes an envelope from an untrusted peer: size first, then dag-cbor, then shape. */
export function decodeEnvelope (bytes: Uint8Array): Envelope {
  if (bytes.length > MAX_ENVELOPE_BYTES) throw new ManifestTooLargeError(`signed manifest of ${bytes.length} bytes (limit ${MAX_ENVELOPE_BYTES})`)
  const value = cbor(bytes, 'signed manifest')
  const fail = (why: string): never => { throw new InvalidManifestError(`signed manifest: ${why}`) }
  if (!(value.manifest instanceof Uint8Array)) fail('no manifest bytes')
  return { manifest: value.manifest, signatures: signatures(value.signatures, 'signatures') }
}

function cbor (bytes: Uint8Array, what: string): any {
  let value: unknown
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidManifestError(`${what}: malformed dag-cbor (${(err as Error).message})`)
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidManifestError(`${what}: not a map`)
  return value
}

function signatures (value: unknown, where: string): Signature[] {
  if (!Array.isArray(value) || value.length > MAX_KEYS * 2) throw new InvalidManifestError(`${where}: expected a list of at most ${MAX_KEYS * 2} signatures`)
  return value.map((s: any) => {
    if (s == null || !(s.key instanceof Uint8Array) || !(s.sig instanceof Uint8Array) || s.key.length > 128 || s.sig.length > 128) {
      throw new InvalidManifestError(`${where}: malformed signature`)
    }
    return { key: s.key, sig: s.sig }
  })
}

/** Decodes and schema-checks manifest bytes (already known to be at most MAX_ENVELOPE_BYTES). */
export function decodeManifest (bytes: Uint8Array): Manifest {
  const v = cbor(bytes, 'manifest')
  const check = new Checker('manifest')
  check.is(v.format === MANIFEST_FORMAT, `format must be "${MANIFEST_FORMAT}"`)
  check.is(v.formatVersion === MANIFEST_FORMAT_VERSION, `formatVersion ${v.formatVersion} is not supported (this host reads ${MANIFEST_FORMAT_VERSION})`)
  const genesis = check.genesis(v.genesis)
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    formatVersion: MANIFEST_FORMAT_VERSION,
    id: check.cid(v.id, 'id'),
    name: check.name(v.name, 'name'),
    version: check.int(v.version, 'version', 1),
    created: check.int(v.created, 'created', 0),
    expires: check.int(v.expires, 'expires', 0),
    genesis,
    keys: check.keys(v.keys, 'keys'),
    threshold: check.int(v.threshold, 'threshold', 1),
    rotations: check.list(v.rotations, 'rotations', MAX_ROTATIONS).map((r: any, i: number) => check.rotation(r, `rotations[${i}]`)),
    disks: check.list(v.disks, 'disks', MAX_DISKS).map((d: any, i: number) => check.disk(d, `disks[${i}]`)),
    vm: check.vm(v.vm),
    config: check.list(v.config, 'config', MAX_PARAMS).map((p: any, i: number) => check.param(p, `config[${i}]`)),
    bootProfile: v.bootProfile == null ? undefined : { root: check.cid(v.bootProfile.root, 'bootProfile.root'), size: check.int(v.bootProfile.size, 'bootProfile.size', 1) }
  }
  check.is(manifest.name === genesis.name, 'name differs from the genesis name')
  check.is(manifest.id.equals(applianceId(genesis)), 'id is not the CID of the genesis document')
  check.is(manifest.threshold <= manifest.keys.length, 'threshold larger than the number of keys')
  check.is(manifest.expires > manifest.created, 'expires before it was created')
  check.is(manifest.disks.length > 0, 'no disks')
  return manifest
}

/** Schema checks with messages that name the field. */
class Checker {
  constructor (private readonly what: string) {}

  is (ok: boolean, why: string): void {
    if (!ok) throw new InvalidManifestError(`${this.what}: ${why}`)
  }

  int (v: unknown, field: string, min: number): number {
    this.is(Number.isSafeInteger(v) && (v as number) >= min, `${field} must be an integer ≥ ${min}`)
    return v as number
  }

  str (v: unknown, field: string): string {
    this.is(typeof v === 'string' && v.length <= MAX_STRING, `${field} must be a string of at most ${MAX_STRING} characters`)
    return v as string
  }

  name (v: unknown, field: string): string {
    this.is(typeof v === 'string' && NAME.test(v), `${field} must be a name (letters, digits, . _ -; at most 64)`)
    return v as string
  }

  cid (v: unknown, field: string): CID {
    const cid = CID.asCID(v)
    this.is(cid != null && cid.version === 1 && cid.multihash.code === BLAKE3_CODE, `${field} must be a BLAKE3 CIDv1`)
    return cid!
  }

  list (v: unknown, field: string, max: number): any[] {
    this.is(Array.isArray(v) && v.length <= max, `${field} must be a list of at most ${max}`)
    return v as any[]
  }

  keys (v: unknown, field: string): Uint8Array[] {
    const keys = this.list(v, field, MAX_KEYS)
    this.is(keys.length > 0, `${field} is empty`)
    for (const k of keys) {
      let ok = k instanceof Uint8Array
      if (ok) {
        try { ok = publicKeyFromProtobuf(k).type === 'Ed25519' } catch { ok = false }
      }
      this.is(ok, `${field} holds something that is not an ed25519 public key`)
    }
    return keys
  }

  genesis (v: any): Genesis {
    this.is(v != null && typeof v === 'object', 'genesis missing')
    const g = { name: this.name(v.name, 'genesis.name'), keys: this.keys(v.keys, 'genesis.keys'), threshold: this.int(v.threshold, 'genesis.threshold', 1) }
    this.is(g.threshold <= g.keys.length, 'genesis threshold larger than the number of keys')
    return g
  }

  rotation (v: any, field: string): Rotation {
    this.is(v != null && typeof v === 'object', `${field} malformed`)
    const r = { seq: this.int(v.seq, `${field}.seq`, 1), keys: this.keys(v.keys, `${field}.keys`), threshold: this.int(v.threshold, `${field}.threshold`, 1), signatures: signatures(v.signatures, `${field}.signatures`) }
    this.is(r.threshold <= r.keys.length, `${field}: threshold larger than the number of keys`)
    return r
  }

  disk (v: any, field: string): DiskRef {
    this.is(v != null && typeof v === 'object', `${field} malformed`)
    this.is(v.role === 'program' || v.role === 'user', `${field}.role must be "program" or "user"`)
    this.is(v.format === 'raw', `${field}.format must be "raw"`)
    return { name: this.name(v.name, `${field}.name`), role: v.role, root: this.cid(v.root, `${field}.root`), size: this.int(v.size, `${field}.size`, 1), format: 'raw' }
  }

  vm (v: any): VmSpec {
    this.is(v != null && typeof v === 'object', 'vm missing')
    this.is(v.arch === 'x86_64', 'vm.arch must be "x86_64"')
    const blob = (b: any, field: string): VmSpec['kernel'] => b == null ? undefined : { root: this.cid(b.root, `${field}.root`), size: this.int(b.size, `${field}.size`, 1) }
    const nics = this.list(v.nics, 'vm.nics', 8).map((n: any, i: number) => {
      this.is(n != null && n.model === 'virtio-net', `vm.nics[${i}].model must be "virtio-net"`)
      const forwards = this.list(n.forwards, `vm.nics[${i}].forwards`, 64).map((f: any, j: number) => {
        const where = `vm.nics[${i}].forwards[${j}]`
        this.is(f != null && (f.proto === 'tcp' || f.proto === 'udp'), `${where}.proto must be tcp or udp`)
        const host = this.int(f.host, `${where}.host`, 1)
        const guest = this.int(f.guest, `${where}.guest`, 1)
        this.is(host <= 65535 && guest <= 65535, `${where}: ports are at most 65535`)
        return { host, guest, proto: f.proto }
      })
      return { model: 'virtio-net' as const, forwards }
    })
    return {
      arch: 'x86_64',
      memory: this.int(v.memory, 'vm.memory', 16 * 1024 * 1024),
      cpus: this.int(v.cpus, 'vm.cpus', 1),
      kernel: blob(v.kernel, 'vm.kernel'),
      initrd: blob(v.initrd, 'vm.initrd'),
      cmdline: v.cmdline == null ? undefined : this.str(v.cmdline, 'vm.cmdline'),
      nics
    }
  }

  param (v: any, field: string): ConfigParam {
    this.is(v != null && typeof v === 'object', `${field} malformed`)
    this.is(v.type === 'string' || v.type === 'int' || v.type === 'bool', `${field}.type must be string, int or bool`)
    const def = v.default
    if (def != null) {
      const ok = v.type === 'string' ? typeof def === 'string' && def.length <= MAX_STRING : v.type === 'int' ? Number.isSafeInteger(def) : typeof def === 'boolean'
      this.is(ok, `${field}.default is not a ${v.type}`)
    }
    return {
      name: this.name(v.name, `${field}.name`),
      type: v.type,
      default: def ?? undefined,
      description: v.description == null ? undefined : this.str(v.description, `${field}.description`),
      secret: v.secret === true
    }
  }
}
