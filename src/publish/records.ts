import { fromString, toString } from 'uint8arrays'
import { parseCid } from '../dag/hash.js'
import { decodeEnvelope, decodeManifest } from './manifest.js'
import { checkFresh, verifyEnvelope } from './signing.js'
import type { SelectFn, ValidateFn } from '@libp2p/kad-dht'

/** DHT records of the latest signed manifest: key `/collective/<appliance id>`, value the envelope. */
export const DHT_NAMESPACE = 'collective'

export function dhtKey (id: string): Uint8Array {
  return fromString(`/${DHT_NAMESPACE}/${id}`)
}

function idOf (key: Uint8Array): string {
  const parts = toString(key).split('/')
  if (parts.length !== 3 || parts[1] !== DHT_NAMESPACE) throw new Error('not a collective record key')
  return parts[2]!
}

/**
 * A DHT node stores a record only if it is a signed manifest of the appliance its key names, valid
 * from the genesis keys through its own rotation chain, and not expired: nobody can fill the DHT
 * with forged or stale manifests. (Hosts check versions against what they saw on top of this.)
 */
export const validateRecord: ValidateFn = async (key, value) => {
  const { manifest } = await verifyEnvelope(value, { id: parseCid(idOf(key)) })
  checkFresh(manifest, 0)
}

/** The latest version wins; records that do not decode lose. */
export const selectRecord: SelectFn = (_key, records) => {
  let best = 0
  let bestVersion = -1
  records.forEach((record, i) => {
    try {
      const version = decodeManifest(decodeEnvelope(record).manifest).version
      if (version > bestVersion) { best = i; bestVersion = version }
    } catch {}
  })
  return best
}

export const dhtValidators = { [DHT_NAMESPACE]: validateRecord }
export const dhtSelectors = { [DHT_NAMESPACE]: selectRecord }
