import { resetVm } from '../../runtime/index.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'reset <vm>',
  summary: "Discard a stopped VM's copy-on-write layer: its next run starts from the published disk.",
  help: 'JSON: {"name", "layers": N (layer files removed)}',
  positionals: 1,
  async run (ctx, [name]) {
    const { layers } = await resetVm(ctx.dataDir, name!)
    ctx.say(layers > 0 ? `${name}: layer discarded` : `${name}: no layer to discard`)
    ctx.result({ name, layers })
  }
}

export default command
