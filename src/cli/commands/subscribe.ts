import { parseCid } from '../../dag/hash.js'
import { appliancesOf } from '../appliances.js'
import { UsageError } from '../../errors.js'
import { pullProgress } from '../progress.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'subscribe <appliance-id> [--key FINGERPRINT] | subscribe --remove <appliance-id>',
  summary: 'Follow an appliance: every valid announcement (gossip, and a DHT check every minute) is verified and its new version fetched — only the blocks this host lacks — and pinned.',
  help: `Options:
  --key FINGERPRINT   require the appliance to be founded by this publisher key (collective-peer key export);
                      without it, the id itself pins the founding keys (trust on first use of the id)
  --remove            stop following (keeps what is pinned)
JSON result: {"id", "subscribed", "update": {...} | null}`,
  options: { key: { type: 'string' }, remove: { type: 'boolean' } },
  positionals: 1,
  async run (ctx, [ref], values) {
    const id = parseCid(ref!).toString()
    const appliances = appliancesOf(ctx)
    const key = values.key as string | undefined
    if (key != null && !/^[1-9A-HJ-NP-Za-km-z]{40,60}$/.test(key)) throw new UsageError(`--key "${key}" is not a key fingerprint (12D3Koo…)`)
    const state = await appliances.get(id) ?? { id, name: '', subscribed: false, published: false, lastVersion: 0, versions: [] }
    state.subscribed = values.remove !== true
    if (key != null) state.requireKey = key
    await appliances.save(state)
    await appliances.log({ type: 'subscribed', id, reason: state.subscribed ? 'subscribe' : 'unsubscribe' })
    let update = null
    if (ctx.daemon != null && state.subscribed) {
      ctx.daemon.announcer.follow(id)
      update = await ctx.daemon.announcer.check(id, { signal: ctx.signal, onProgress: pullProgress(ctx) }) ?? null
    } else if (state.subscribed) {
      ctx.note('no daemon is running: the daemon follows this appliance when it starts')
    }
    ctx.say(state.subscribed ? `subscribed to ${id}${update?.status === 'updated' ? `: fetched v${update.version}` : ''}` : `unsubscribed from ${id}`)
    ctx.result({ id, subscribed: state.subscribed, update })
  }
}

export default command
