import { exportCar, importCar, DiskReader } from '../../dag/index.js'
import { checkPinName, firstMissing } from '../../store/index.js'
import { InvalidCarError, UsageError } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'car export <cid|name> <out.car> | car import <in.car> [--name NAME]',
  summary: 'Export a root as a CARv1 any IPFS tool can verify, or import one (every block verified).',
  options: { name: { type: 'string' } },
  positionals: [2, 3],
  async run (ctx, [verb, a, b], values) {
    const store = await ctx.openStore()
    if (verb === 'export') {
      if (a == null || b == null) throw new UsageError('usage: collective-peer car export <cid|name> <out.car>')
      const root = await ctx.resolveRoot(a)
      const result = await exportCar(store.blocks, root, ctx.path(b), { signal: ctx.signal })
      ctx.note(`wrote ${b}: ${result.blocks} blocks, ${result.bytes} bytes`)
      ctx.result({ root: root.toString(), ...result, file: b })
      return
    }
    if (verb === 'import') {
      if (a == null || b != null) throw new UsageError('usage: collective-peer car import <in.car> [--name NAME]')
      const result = await importCar(store.blocks, ctx.path(a), { signal: ctx.signal })
      const missing = await firstMissing(store.blocks, result.root, ctx.signal)
      if (missing != null) throw new InvalidCarError(`${a}: incomplete DAG, block ${missing} is missing (kept the verified blocks, not pinned)`)
      const name = checkPinName((values.name as string | undefined) ?? result.root.toString())
      const reader = await DiskReader.open(result.root, store.blocks)
      await store.pins.set({ name, root: result.root.toString(), size: reader.size, created: new Date().toISOString() })
      ctx.say(result.root.toString())
      ctx.result({ root: result.root.toString(), blocks: result.blocks, bytesStored: result.bytesStored, name })
      return
    }
    throw new UsageError(`unknown car action "${verb}" (export or import)`)
  }
}

export default command
