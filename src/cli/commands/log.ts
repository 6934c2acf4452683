import { appliancesOf } from '../appliances.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'log [<appliance-id>]',
  summary: 'The appliance event log: announcements accepted and refused (with the reason), versions fetched, rollbacks.',
  help: 'JSON: one {"time", "type", "id", "version", "source", "code", "reason"} line per event, then {"events": N}',
  positionals: [0, 1],
  async run (ctx, [id]) {
    const events = (await appliancesOf(ctx).readLog()).filter(e => id == null || e.id === id)
    for (const e of events) {
      ctx.say(`${e.time}  ${e.type.padEnd(10)} ${e.id.slice(-12)}${e.version != null ? ` v${e.version}` : ''}${e.source != null ? ` (${e.source})` : ''}${e.code != null ? ` [${e.code}]` : ''}${e.reason != null ? ` ${e.reason}` : ''}`)
      ctx.emit(e)
    }
    ctx.result({ events: events.length })
  }
}

export default command
