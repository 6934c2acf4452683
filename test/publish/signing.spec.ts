/** Manifest verification in-process: the trust chain's edge cases that a swarm test would not reach. */
import { describe, it, expect, beforeAll } from 'vitest'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { compare } from 'uint8arrays/compare'
import { rawCid } from '../../src/dag/hash.js'
import {
  addSignatures, applianceId, checkFresh, encodeManifest, signManifest, signRotation, verifyEnvelope,
  MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, type Manifest
} from '../../src/publish/index.js'
import type { PrivateKey } from '@libp2p/interface'

const pub = (k: PrivateKey): Uint8Array => publicKeyToProtobuf(k.publicKey)
const sorted = (keys: PrivateKey[]): Uint8Array[] => keys.map(pub).sort(compare)

describe('manifest signatures and the key chain', () => {
  let a: PrivateKey, b: PrivateKey, c: PrivateKey, d: PrivateKey
  let base: Manifest

  beforeAll(async () => {
    [a, b, c, d] = await Promise.all([1, 2, 3, 4].map(async () => await generateKeyPair('Ed25519')))
    const genesis = { name: 'app', keys: sorted([a, b]), threshold: 2 }
    const now = Math.floor(Date.now() / 1000)
    base = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_FORMAT_VERSION,
      id: applianceId(genesis),
      name: 'app',
      version: 1,
      created: now,
      expires: now + 3600,
      genesis,
      keys: genesis.keys,
      threshold: 2,
      rotations: [],
      disks: [{ name: 'root', role: 'program', root: rawCid(new Uint8Array([1])), size: 4096, format: 'raw' }],
      vm: { arch: 'x86_64', memory: 256 * 2 ** 20, cpus: 1, nics: [] },
      config: []
    }
  })

  it('the id is the genesis CID: the same keys and name always give the same id', () => {
    expect(applianceId({ name: 'app', keys: sorted([b, a]), threshold: 2 }).equals(base.id)).toBe(true)
    expect(applianceId({ name: 'app2', keys: sorted([a, b]), threshold: 2 }).equals(base.id)).toBe(false)
  })

  it('a threshold of 2 needs two distinct keys; signatures can be added one signer at a time', async () => {
    const bytes = encodeManifest(base)
    await expect(verifyEnvelope(await signManifest(bytes, [a]))).rejects.toMatchObject({ code: 'ERR_THRESHOLD' })
    await expect(verifyEnvelope(await signManifest(bytes, [a, a]))).rejects.toMatchObject({ code: 'ERR_THRESHOLD' })
    const both = await addSignatures(await signManifest(bytes, [a]), [b])
    expect((await verifyEnvelope(both)).manifest.version).toBe(1)
    // An outsider's extra signature neither helps nor hurts.
    expect((await verifyEnvelope(await addSignatures(both, [c]))).manifest.version).toBe(1)
  })

  it('a rotation must be signed by the old threshold and the new one; hosts walk it and then trust only the new keys', async () => {
    const next = { seq: 1, keys: sorted([c, d]), threshold: 1 }
    const good = await signRotation(base.id, next, [a, b, c])
    const v2 = { ...base, version: 2, keys: next.keys, threshold: 1, rotations: [good] }
    const verified = await verifyEnvelope(await signManifest(encodeManifest(v2), [c]))
    expect(verified.trust).toMatchObject({ seq: 1, threshold: 1 })
    // Only one old key: below the old threshold.
    const weak = await signRotation(base.id, next, [a, c])
    await expect(verifyEnvelope(await signManifest(encodeManifest({ ...v2, rotations: [weak] }), [c]))).rejects.toMatchObject({ code: 'ERR_THRESHOLD' })
    // The new keys never agreed to it.
    const imposed = await signRotation(base.id, next, [a, b])
    await expect(verifyEnvelope(await signManifest(encodeManifest({ ...v2, rotations: [imposed] }), [c]))).rejects.toMatchObject({ code: 'ERR_UNTRUSTED_KEY' })
    // A host that already applied rotation 1 refuses a manifest still signed by the old keys.
    const old = await signManifest(encodeManifest({ ...base, version: 3 }), [a, b])
    await expect(verifyEnvelope(old, { trusted: verified.trust })).rejects.toMatchObject({ code: 'ERR_UNTRUSTED_KEY' })
  })

  it('a chain with a gap is refused', async () => {
    const skip = await signRotation(base.id, { seq: 2, keys: sorted([c]), threshold: 1 }, [a, b, c])
    const v2 = { ...base, version: 2, keys: sorted([c]), threshold: 1, rotations: [skip] }
    await expect(verifyEnvelope(await signManifest(encodeManifest(v2), [c]))).rejects.toMatchObject({ code: 'ERR_INVALID_MANIFEST' })
  })

  it('a rotation signed for another appliance does not transfer', async () => {
    const otherId = applianceId({ name: 'other', keys: sorted([a, b]), threshold: 2 })
    const stolen = await signRotation(otherId, { seq: 1, keys: sorted([d]), threshold: 1 }, [a, b, d])
    const v2 = { ...base, version: 2, keys: sorted([d]), threshold: 1, rotations: [stolen] }
    // The trusted keys' signatures do not verify over this appliance's rotation payload.
    await expect(verifyEnvelope(await signManifest(encodeManifest(v2), [d]))).rejects.toMatchObject({ code: 'ERR_BAD_SIGNATURE' })
  })

  it('version and expiry', () => {
    expect(() => { checkFresh(base, 1) }).toThrow(expect.objectContaining({ code: 'ERR_STALE_VERSION' }))
    expect(() => { checkFresh({ ...base, version: 2 }, 1) }).not.toThrow()
    expect(() => { checkFresh({ ...base, version: 2, expires: base.created - 1 }, 1, base.created) }).toThrow(expect.objectContaining({ code: 'ERR_EXPIRED' }))
  })
})
