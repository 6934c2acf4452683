/** Co-signing in-process: what `sign` checks before it adds a signature, and what it tells. */
import { describe, it, expect, beforeAll } from 'vitest'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { compare } from 'uint8arrays/compare'
import { rawCid } from '../../src/dag/hash.js'
import {
  addSignatures, applianceId, cosignEnvelope, encodeManifest, fingerprint, inspectEnvelope, parsePublicKey, signManifest, verifyEnvelope,
  MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, type Manifest
} from '../../src/publish/index.js'
import type { PrivateKey } from '@libp2p/interface'

const pub = (k: PrivateKey): Uint8Array => publicKeyToProtobuf(k.publicKey)

describe('co-signing a manifest', () => {
  let a: PrivateKey, b: PrivateKey, c: PrivateKey, outsider: PrivateKey
  let base: Manifest

  beforeAll(async () => {
    [a, b, c, outsider] = await Promise.all([1, 2, 3, 4].map(async () => await generateKeyPair('Ed25519')))
    const genesis = { name: 'app', keys: [a, b, c].map(pub).sort(compare), threshold: 2 }
    const now = Math.floor(Date.now() / 1000)
    base = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_FORMAT_VERSION,
      id: applianceId(genesis),
      name: 'app',
      version: 3,
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

  it('inspectEnvelope counts valid signers without requiring the threshold; cosign adds one and the result verifies', async () => {
    const draft = await signManifest(encodeManifest(base), [a])
    const inspected = await inspectEnvelope(draft)
    expect(inspected.signers.map(k => fingerprint(k))).toEqual([fingerprint(a.publicKey)])
    await expect(verifyEnvelope(draft)).rejects.toMatchObject({ code: 'ERR_THRESHOLD' })
    const done = await cosignEnvelope(draft, [b])
    expect(done.signers).toHaveLength(2)
    expect(done.added).toEqual([fingerprint(b.publicKey)])
    expect((await verifyEnvelope(done.envelope)).manifest.version).toBe(3)
  })

  it('refuses: an unlisted key, a signer twice, a stranger\'s signature already there, a stale or expired version', async () => {
    const draft = await signManifest(encodeManifest(base), [a])
    await expect(cosignEnvelope(draft, [outsider])).rejects.toMatchObject({ code: 'ERR_KEY_NOT_LISTED' })
    await expect(cosignEnvelope(draft, [a])).rejects.toMatchObject({ code: 'ERR_ALREADY_SIGNED' })
    await expect(cosignEnvelope(draft, [b, b])).rejects.toMatchObject({ code: 'ERR_ALREADY_SIGNED' })
    await expect(cosignEnvelope(await addSignatures(draft, [outsider]), [b])).rejects.toMatchObject({ code: 'ERR_UNTRUSTED_KEY' })
    await expect(cosignEnvelope(draft, [b], { lastVersion: 3 })).rejects.toMatchObject({ code: 'ERR_STALE_VERSION' })
    const expired = await signManifest(encodeManifest({ ...base, created: 1_600_000_000, expires: 1_600_086_400 }), [a])
    await expect(cosignEnvelope(expired, [b])).rejects.toMatchObject({ code: 'ERR_EXPIRED' })
  })

  it('parsePublicKey takes a fingerprint or a base64 key, and refuses anything else', () => {
    expect(parsePublicKey(fingerprint(a.publicKey))).toEqual(pub(a))
    expect(parsePublicKey(Buffer.from(pub(b)).toString('base64'))).toEqual(pub(b))
    expect(() => parsePublicKey('not-a-key')).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }))
  })
})
