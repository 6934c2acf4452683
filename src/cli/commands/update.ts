import { findAppliance } from '../appliances.js'
import { NoDaemonError } from '../../daemon/interface.js'
import { pullProgress } from '../progress.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'update <appliance-id|name>',
  summary: 'Ask the swarm (DHT) for the latest version of a subscribed appliance now, and fetch it if it is new.',
  help: 'JSON result: {"id", "version", "status": "updated"|"current"|"none", "root", "bytesFetched"}',
  positionals: 1,
  async run (ctx, [ref]) {
    if (ctx.daemon == null) throw new NoDaemonError(ctx.dataDir)
    const state = await findAppliance(ctx, ref!)
    const update = await ctx.daemon.announcer.check(state.id, { signal: ctx.signal, onProgress: pullProgress(ctx) })
    const after = await ctx.daemon.appliances.require(state.id)
    const roots = update?.status === 'updated' ? update.roots : []
    const bytesFetched = update?.status === 'updated' ? update.bytesFetched : 0
    ctx.say(update?.status === 'updated' ? `${state.id}: now v${update.version} (${bytesFetched} bytes fetched)` : `${state.id}: v${after.current ?? 0} is the latest`)
    ctx.result({ id: state.id, version: after.current ?? 0, status: update?.status ?? 'none', root: roots[0] ?? null, bytesFetched })
  }
}

export default command
