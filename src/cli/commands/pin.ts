import { DiskReader } from '../../dag/index.js'
import { checkPinName, firstMissing } from '../../store/index.js'
import { BlockMissingError, UsageError } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'pin <cid> --name NAME | pin rm <name> | pin ls',
  summary: 'Name a root so gc keeps its blocks, remove a name, or list names.',
  options: { name: { type: 'string' } },
  positionals: [1, 2],
  async run (ctx, args, values) {
    const store = await ctx.openStore()
    if (args[0] === 'ls') {
      const pins = await store.pins.list()
      for (const pin of pins) {
        ctx.emit(pin)
        ctx.say(`${pin.name}\t${pin.root}\t${pin.size}`)
      }
      ctx.result({ pins: pins.length })
      return
    }
    if (args[0] === 'rm') {
      if (args[1] == null) throw new UsageError('usage: collective-peer pin rm <name>')
      await store.pins.remove(args[1])
      ctx.result({ removed: args[1] })
      return
    }
    const root = await ctx.resolveRoot(args[0]!)
    const name = checkPinName((values.name as string | undefined) ?? root.toString())
    const missing = await firstMissing(store.blocks, root, ctx.signal)
    if (missing != null) throw new BlockMissingError(`cannot pin ${root}: block ${missing} is not in the store (pull it first)`)
    const reader = await DiskReader.open(root, store.blocks)
    await store.pins.set({ name, root: root.toString(), size: reader.size, created: new Date().toISOString() })
    ctx.say(`pinned ${root} as "${name}"`)
    ctx.result({ name, root: root.toString() })
  }
}

export default command
