import { appliancesOf, findAppliance } from '../appliances.js'
import { CollectiveError, ExitCode } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'rollback <appliance-id|name>',
  summary: 'Go back to the previous version of an appliance (kept pinned for this), without the network. Newer announcements are still refused until a version above the newest seen arrives.',
  help: 'JSON result: {"id", "version", "from"}',
  positionals: 1,
  async run (ctx, [ref]) {
    const appliances = appliancesOf(ctx)
    const state = await findAppliance(ctx, ref!)
    const previous = state.versions.find(v => v.version === state.previous)
    if (state.previous == null || previous?.fetched !== true) {
      throw new CollectiveError(`${state.id}: no previous version is kept on this host`, 'ERR_NO_PREVIOUS_VERSION', ExitCode.NotFound)
    }
    const from = state.current!
    state.current = state.previous
    state.previous = from
    await appliances.save(state)
    await appliances.log({ type: 'rollback', id: state.id, version: state.current, reason: `from v${from}` })
    ctx.say(`${state.id}: v${from} → v${state.current}`)
    ctx.result({ id: state.id, version: state.current, from })
  }
}

export default command
