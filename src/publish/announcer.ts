import { logger } from '@libp2p/logger'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { dhtKey } from './records.js'
import { isRefusal, type ConsiderOptions, type Updater, type UpdateResult } from './updater.js'
import type { Appliances } from './state.js'
import type { CollectiveNode } from '../net/node.js'
import type { SharedExclusiveLock } from '../daemon/lock.js'

const log = logger('collective:announce')

/** Gossip topic of an appliance's announcements. */
export function topicOf (id: string): string {
  return `/collective/appliance/1/${id}`
}

function idOfTopic (topic: string): string | undefined {
  const prefix = '/collective/appliance/1/'
  return topic.startsWith(prefix) ? topic.slice(prefix.length) : undefined
}

/** How often a host asks the DHT for newer versions of what it follows. @default 60 s */
export const CHECK_INTERVAL = 60_000
/** How often a publisher re-announces its latest versions (gossip and DHT). @default 5 min */
export const REPUBLISH_INTERVAL = 300_000

export interface AnnouncerInit {
  libp2p: CollectiveNode
  appliances: Appliances
  updater: Updater
  /** Held shared while an update fetches and pins (gc, which deletes blocks, takes it exclusive). */
  lock?: SharedExclusiveLock
  checkInterval?: number
  republishInterval?: number
}

/**
 * Announcements on the swarm: a publisher's signed manifests go out on the appliance's gossip topic
 * and into the DHT (latest valid version wins, for hosts that join later). A host follows the topics
 * of the appliances it subscribes to: gossip's validator refuses forged and stale manifests before
 * they spread, and valid ones are handed to the updater. A periodic DHT check catches what gossip missed.
 */
export class Announcer {
  private readonly init: AnnouncerInit
  private timers: Array<ReturnType<typeof setInterval>> = []
  private readonly controller = new AbortController()
  private readonly onMessage = (event: CustomEvent<{ topic: string, data: Uint8Array }>): void => {
    const id = idOfTopic(event.detail.topic)
    if (id == null) return
    void this.consider(event.detail.data, id, 'gossip')
  }

  constructor (init: AnnouncerInit) {
    this.init = init
  }

  private get pubsub (): CollectiveNode['services']['pubsub'] { return this.init.libp2p.services.pubsub }

  async start (): Promise<void> {
    this.pubsub.addEventListener('message', this.onMessage as any)
    for (const state of await this.init.appliances.list()) {
      if (state.subscribed) this.follow(state.id)
    }
    this.timers.push(setInterval(() => { void this.checkAll() }, this.init.checkInterval ?? CHECK_INTERVAL))
    this.timers.push(setInterval(() => { void this.republish() }, this.init.republishInterval ?? REPUBLISH_INTERVAL))
    for (const t of this.timers) t.unref()
    // Hosts that were offline catch up; publishers put their latest versions back in the DHT.
    setTimeout(() => { void this.checkAll(); void this.republish() }, 1_000).unref()
  }

  async stop (): Promise<void> {
    this.controller.abort()
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    this.pubsub.removeEventListener('message', this.onMessage as any)
  }

  /** Subscribes to an appliance's topic, with a validator that drops what the updater refuses. */
  follow (id: string): void {
    const topic = topicOf(id)
    this.pubsub.topicValidators.set(topic, async (_peer, message) => {
      if (!('data' in message)) return TopicValidatorResult.Reject
      const verdict = await this.init.updater.judge(message.data, id, 'gossip').catch(() => 'reject' as const)
      return verdict === 'accept' ? TopicValidatorResult.Accept : verdict === 'ignore' ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
    })
    this.pubsub.subscribe(topic)
  }

  private async consider (envelope: Uint8Array, id: string, source: string): Promise<UpdateResult | undefined> {
    try {
      const run = async (): Promise<UpdateResult> => await this.init.updater.consider(envelope, id, source, { signal: this.controller.signal })
      return this.init.lock != null ? await this.init.lock.run(false, run) : await run()
    } catch (err) {
      if (!isRefusal(err)) log.error('update of %s from %s failed: %e', id, source, err)
      return undefined
    }
  }

  /** Sends a signed manifest out: gossip now, the DHT for later. */
  async announce (id: string, envelope: Uint8Array): Promise<{ gossipPeers: number, dht: boolean }> {
    let gossipPeers = 0
    try {
      gossipPeers = (await this.pubsub.publish(topicOf(id), envelope)).recipients.length
    } catch (err) {
      log('gossip publish of %s: %e', id, err)
    }
    let dht = false
    try {
      await this.init.libp2p.contentRouting.put(dhtKey(id), envelope, { signal: AbortSignal.timeout(30_000) })
      dht = true
    } catch (err) {
      log('DHT put of %s: %e', id, err)
    }
    return { gossipPeers, dht }
  }

  /** The latest version the DHT holds, considered as an announcement. */
  async check (id: string, options: ConsiderOptions = {}): Promise<UpdateResult | undefined> {
    let envelope: Uint8Array
    try {
      envelope = await this.init.libp2p.contentRouting.get(dhtKey(id), { signal: options.signal ?? AbortSignal.timeout(30_000) })
    } catch (err) {
      log('DHT get of %s: %e', id, err)
      return undefined
    }
    return await this.init.updater.consider(envelope, id, 'dht', options)
  }

  private async checkAll (): Promise<void> {
    for (const state of await this.init.appliances.list()) {
      if (!state.subscribed || this.controller.signal.aborted) continue
      const check = async (): Promise<unknown> => await this.check(state.id)
      await (this.init.lock != null ? this.init.lock.run(false, check) : check()).catch(err => { if (!isRefusal(err)) log.error('check of %s: %e', state.id, err) })
    }
  }

  private async republish (): Promise<void> {
    for (const state of await this.init.appliances.list()) {
      if (!state.published || this.controller.signal.aborted) continue
      const envelope = await this.init.appliances.envelope(state.id, state.lastVersion).catch(() => undefined)
      if (envelope != null) await this.announce(state.id, envelope)
    }
  }
}
