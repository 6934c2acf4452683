import { fromString, toString } from 'uint8arrays'
import { parseCid } from '../dag/hash.js'
import { decodeEnvelope, decodeManifest } from './manifest.js'
import { checkFresh, verifyEnvelope } from './signing.js'
import type { KadDHT, SelectFn, ValidateFn } from '@libp2p/kad-dht'

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

/** How long `latestRecord` waits for other holders once one valid record arrived (at most). */
const MAX_GRACE = 500
const MIN_GRACE = 50

/**
 * The latest valid manifest envelope of appliance `id` in the DHT, without waiting for the whole
 * query. `contentRouting.get` returns only once the query ends, which includes dialling every
 * dead peer the routing tables still list (0.75 s on loopback, seconds on a WAN). Here the first
 * valid record starts a grace period as long as it took to arrive (50-500 ms), for the other holders
 * to answer; the highest version among those wins and the query is stopped. A record newer than
 * all that answered in time is found by the next full check (updates, `subscribe`).
 */
export async function latestRecord (dht: KadDHT, id: string, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
  const controller = new AbortController()
  const signal = options.signal != null ? AbortSignal.any([options.signal, controller.signal]) : controller.signal
  const started = Date.now()
  let best: { envelope: Uint8Array, version: number } | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const events = dht.get(dhtKey(id), { signal })[Symbol.asyncIterator]()
    const expired = new Promise<'expired'>(resolve => { signal.addEventListener('abort', () => { resolve('expired') }, { once: true }) })
    for (;;) {
      const next = await Promise.race([events.next(), expired])
      if (next === 'expired' || next.done === true) break
      const event = next.value
      if (event.name !== 'VALUE') continue
      let version: number
      try {
        await validateRecord(dhtKey(id), event.value)
        version = decodeManifest(decodeEnvelope(event.value).manifest).version
      } catch {
        continue
      }
      if (best == null || version > best.version) best = { envelope: event.value, version }
      if (timer == null) {
        const grace = Math.min(MAX_GRACE, Math.max(MIN_GRACE, Date.now() - started))
        timer = setTimeout(() => { controller.abort() }, grace)
      }
    }
  } catch (err) {
    if (best == null) throw err
  } finally {
    clearTimeout(timer)
    controller.abort()
  }
  if (best == null) {
    options.signal?.throwIfAborted()
    throw new Error(`no valid record of ${id} in the DHT`)
  }
  return best.envelope
}
