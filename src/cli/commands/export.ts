import { exportImage } from '../../dag/index.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'export <cid|name> <file>',
  summary: 'Write an image back to a file, byte-identical and sparse (holes are not written).',
  help: 'JSON result: {"root", "size", "written", "file"}',
  positionals: 2,
  async run (ctx, [ref, file]) {
    const store = await ctx.openStore()
    const root = await ctx.resolveRoot(ref!)
    const result = await exportImage(store.blocks, root, ctx.path(file!), {
      signal: ctx.signal,
      onProgress: event => ctx.progress.update({ label: 'export', done: event.written, total: event.size }, event)
    })
    ctx.note(`wrote ${file} (${result.size} bytes, ${result.written} bytes of data)`)
    ctx.result({ root: root.toString(), size: result.size, written: result.written, file })
  }
}

export default command
