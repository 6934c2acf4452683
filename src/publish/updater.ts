import { logger } from '@libp2p/logger'
import { CollectiveError } from '../errors.js'
import { Mutex } from '../util/mutex.js'
import { parseCid } from '../dag/hash.js'
import { checkFresh, verifyEnvelope } from './signing.js'
import { fingerprint } from './keys.js'
import { pinVersion } from './publisher.js'
import { fromTrusted, toTrusted, type Appliances, type ApplianceState } from './state.js'
import { equals } from 'uint8arrays/equals'
import { StaleVersionError, UntrustedKeyError, type Manifest, type Verified } from './interface.js'
import type { Store } from '../store/index.js'
import type { BlockExchange, PullProgressEvent } from '../net/interface.js'

const log = logger('collective:update')

/** Versions kept pinned per appliance (the current one and the one `rollback` returns to). */
export const DEFAULT_RETAIN = 2

export type UpdateResult =
  | { status: 'updated', id: string, version: number, bytesFetched: number, roots: string[] }
  | { status: 'current', id: string, version: number }
  | { status: 'ignored', id: string }

export interface UpdaterInit {
  store: Store
  appliances: Appliances
  exchange: BlockExchange
  /** @default DEFAULT_RETAIN */
  retain?: number
  /** Frees blocks no pin needs, after older versions were unpinned. */
  collectGarbage?(): Promise<void>
  onEvent?(event: { type: 'accepted' | 'refused' | 'fetched', id: string, version?: number, reason?: string }): void
}

export interface ConsiderOptions {
  signal?: AbortSignal
  /** The fetch's progress (one pull per disk and boot file). */
  onProgress?(event: PullProgressEvent): void
}

/** Error codes that mean "this announcement is refused" (as opposed to "fetching it failed"). */
const REFUSALS = new Set(['ERR_INVALID_MANIFEST', 'ERR_MANIFEST_TOO_LARGE', 'ERR_BAD_SIGNATURE', 'ERR_UNTRUSTED_KEY', 'ERR_THRESHOLD', 'ERR_STALE_VERSION', 'ERR_EXPIRED', 'ERR_WRONG_APPLIANCE'])

export function isRefusal (err: unknown): err is CollectiveError {
  return err instanceof CollectiveError && REFUSALS.has(err.code)
}

/**
 * Takes signed manifests from anywhere (gossip, the DHT, a file) for subscribed appliances: verifies
 * signatures, key chain, version and expiry; records the new version as seen (durably) before
 * acting on it; fetches only the blocks the store lacks; pins it; keeps the previous version for
 * rollback and unpins older ones. Refusals are logged with their code.
 */
export class Updater {
  private readonly init: UpdaterInit
  private readonly mutex = new Mutex()

  constructor (init: UpdaterInit) {
    this.init = init
  }

  /** Verifies without acting (gossip's validator): the verdict, logged when refused. */
  async judge (envelope: Uint8Array, id: string, source: string): Promise<'accept' | 'ignore' | 'reject'> {
    const state = await this.init.appliances.get(id)
    if (state?.subscribed !== true) return 'ignore'
    try {
      const verified = await this.verify(envelope, state)
      return await this.fresh(verified.manifest, envelope, state) === 'current' ? 'ignore' : 'accept'
    } catch (err) {
      if (!isRefusal(err)) throw err
      await this.refused(id, source, err)
      // An old but genuine version is relayed by honest peers too: drop it without blame.
      return err.code === 'ERR_STALE_VERSION' ? 'ignore' : 'reject'
    }
  }

  async consider (envelope: Uint8Array, id: string, source: string, options: ConsiderOptions = {}): Promise<UpdateResult> {
    return await this.mutex.run(async () => {
      const state = await this.init.appliances.get(id)
      if (state?.subscribed !== true) return { status: 'ignored', id }
      let verified: Verified & { trust: ReturnType<typeof toTrusted> }
      try {
        verified = await this.verify(envelope, state)
        if (await this.fresh(verified.manifest, envelope, state) === 'current') return { status: 'current', id, version: verified.manifest.version }
      } catch (err) {
        if (isRefusal(err)) await this.refused(id, source, err)
        throw err
      }
      return await this.fetch(state, verified, source, options)
    })
  }

  private async verify (envelope: Uint8Array, state: ApplianceState): Promise<Verified & { trust: ReturnType<typeof toTrusted> }> {
    const verified = await verifyEnvelope(envelope, { id: parseCid(state.id), trusted: state.trust != null ? toTrusted(state.trust) : undefined })
    if (state.requireKey != null && !verified.manifest.genesis.keys.some(k => fingerprint(k) === state.requireKey)) {
      throw new UntrustedKeyError(`${verified.manifest.name}: not founded by key ${state.requireKey} (subscribe --key)`)
    }
    return verified
  }

  /**
   * 'new'; 'current' for the very manifest already fetched; 'retry' for one recorded but not yet
   * fetched. Throws for stale, expired, or a different manifest reusing a version number.
   */
  private async fresh (manifest: Manifest, envelope: Uint8Array, state: ApplianceState): Promise<'new' | 'current' | 'retry'> {
    const record = manifest.version === state.lastVersion ? state.versions.find(v => v.version === manifest.version) : undefined
    if (record != null) {
      const known = await this.init.appliances.envelope(state.id, manifest.version).catch(() => undefined)
      if (known == null || !equals(known, envelope)) {
        throw new StaleVersionError(`${manifest.name} v${manifest.version}: a different manifest with a version already seen (replay or equivocation)`)
      }
      if (record.fetched) return 'current'
      // Seen and recorded, but its fetch did not finish: take it again (still checking expiry).
      checkFresh(manifest, manifest.version - 1)
      return 'retry'
    }
    checkFresh(manifest, state.lastVersion)
    return 'new'
  }

  private async refused (id: string, source: string, err: CollectiveError): Promise<void> {
    log('refused an announcement of %s from %s: %s', id, source, err.message)
    this.init.onEvent?.({ type: 'refused', id, reason: err.message })
    await this.init.appliances.log({ type: 'refused', id, source, code: err.code, reason: err.message })
  }

  private async fetch (state: ApplianceState, verified: Verified & { trust: ReturnType<typeof toTrusted> }, source: string, options: ConsiderOptions): Promise<UpdateResult> {
    const { manifest } = verified
    const { appliances, exchange, store } = this.init
    // Persist "seen" first: after a crash or restart, this version and older ones stay refused.
    await appliances.saveEnvelope(state.id, manifest.version, verified.envelope)
    state.lastVersion = Math.max(state.lastVersion, manifest.version)
    state.trust = fromTrusted(verified.trust)
    state.name = manifest.name
    if (!state.versions.some(v => v.version === manifest.version)) {
      state.versions.push({ version: manifest.version, created: manifest.created, expires: manifest.expires, fetched: false, pins: [] })
    }
    await appliances.save(state)
    await appliances.log({ type: 'accepted', id: state.id, version: manifest.version, source })
    this.init.onEvent?.({ type: 'accepted', id: state.id, version: manifest.version })

    const roots = [...manifest.disks.map(d => d.root), ...[manifest.vm.kernel, manifest.vm.initrd, manifest.bootProfile].filter(b => b != null).map(b => b!.root)]
    let bytesFetched = 0
    try {
      for (const root of roots) bytesFetched += (await exchange.pull(root, { signal: options.signal, onProgress: options.onProgress })).bytesFetched
    } catch (err) {
      await appliances.log({ type: 'failed', id: state.id, version: manifest.version, code: (err as CollectiveError).code, reason: (err as Error).message })
      throw err
    }
    const pins = await pinVersion(store, manifest)
    const record = state.versions.find(v => v.version === manifest.version)!
    record.fetched = true
    record.pins = pins
    if (state.current !== manifest.version) {
      state.previous = state.current
      state.current = manifest.version
    }
    await appliances.save(state)
    await appliances.log({ type: 'fetched', id: state.id, version: manifest.version, bytesFetched })
    this.init.onEvent?.({ type: 'fetched', id: state.id, version: manifest.version })
    await this.prune(state)
    return { status: 'updated', id: state.id, version: manifest.version, bytesFetched, roots: roots.map(r => r.toString()) }
  }

  /** Unpins versions beyond the retention (never the current or previous one), then collects garbage. */
  private async prune (state: ApplianceState): Promise<void> {
    const keep = new Set([state.current, state.previous])
    const fetched = state.versions.filter(v => v.fetched && v.pins.length > 0).sort((a, b) => b.version - a.version)
    const drop = fetched.slice(this.init.retain ?? DEFAULT_RETAIN).filter(v => !keep.has(v.version))
    if (drop.length === 0) return
    for (const v of drop) {
      for (const pin of v.pins) await this.init.store.pins.remove(pin).catch(() => {})
      v.pins = []
      v.fetched = false
      await this.init.appliances.log({ type: 'pruned', id: state.id, version: v.version })
    }
    await this.init.appliances.save(state)
    await this.init.collectGarbage?.()
  }
}
