import { fsck } from '../../store/index.js'
import { ExitCode } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'fsck',
  summary: 'Re-hash every block; corrupt blocks are reported and dropped (a later pull fetches them again). Exit 5 when anything was wrong.',
  help: 'JSON result: {"blocks", "bytes", "corrupt": [cid...], "incomplete": [{"name", "missing"}]}',
  exclusive: true,
  async run (ctx) {
    const store = await ctx.openStore()
    const result = await fsck(store.blocks, store.pins, {
      signal: ctx.signal,
      onProgress: event => { if (event.type === 'fsck:progress') ctx.progress.update({ label: 'fsck', done: event.blocks, total: event.blocks }, event) }
    })
    for (const cid of result.corrupt) ctx.note(`corrupt block ${cid} (removed)`)
    for (const { name, missing } of result.incomplete) ctx.note(`root "${name}" is incomplete: block ${missing} is missing`)
    ctx.say(`checked ${result.blocks} blocks (${result.bytes} bytes): ${result.corrupt.length} corrupt, ${result.incomplete.length} incomplete roots`)
    ctx.result(result)
    return result.corrupt.length > 0 || result.incomplete.length > 0 ? ExitCode.Corrupt : ExitCode.Ok
  }
}

export default command
