import { diff } from '../../dag/index.js'
import { batchWireBytes } from '../../net/exchange/codec.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'diff <old> <new>',
  summary: 'The blocks and bytes a host holding <old> must fetch to have <new>: exactly what an update moves.',
  help: 'JSON: one {"cid", "size"} line per block, then {"blocks", "bytes", "wireBytes"} (wireBytes: compressed as the exchange sends them: zstd over batches of 64 blocks).',
  positionals: 2,
  async run (ctx, [oldRef, newRef]) {
    const store = await ctx.openStore()
    const result = await diff(store.blocks, await ctx.resolveRoot(oldRef!), await ctx.resolveRoot(newRef!), { signal: ctx.signal, wireCost: batchWireBytes })
    for (const block of result.list) ctx.emit({ cid: block.cid.toString(), size: block.size })
    ctx.say(`${result.blocks} blocks, ${result.bytes} bytes (${result.wireBytes} bytes on the wire)`)
    ctx.result({ blocks: result.blocks, bytes: result.bytes, wireBytes: result.wireBytes })
  }
}

export default command
