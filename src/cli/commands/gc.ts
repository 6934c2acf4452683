import { collectGarbage } from '../../store/index.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'gc',
  summary: 'Free the blocks no named root needs, and give mostly-dead pack files back to the filesystem.',
  help: 'JSON result: {"blocksRemoved", "bytesRemoved", "packsRewritten", "bytesReclaimed"}',
  exclusive: true,
  async run (ctx) {
    const store = await ctx.openStore()
    const result = await collectGarbage(store.blocks, store.pins, { signal: ctx.signal })
    ctx.say(`removed ${result.blocksRemoved} blocks (${result.bytesRemoved} bytes); rewrote ${result.packsRewritten} packs, reclaimed ${result.bytesReclaimed} bytes`)
    ctx.result(result)
  }
}

export default command
