import { DiskReader } from '../../dag/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

const STEP = 4 * 1024 * 1024

function count (text: unknown, flag: string): number | undefined {
  if (text == null) return undefined
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${flag} must be a non-negative integer`)
  return n
}

const command: Command = {
  usage: 'cat <cid|name> [--offset N] [--length N]',
  summary: 'Write a byte range of an image to stdout (found through the offset index, O(depth) per block).',
  options: { offset: { type: 'string' }, length: { type: 'string' } },
  positionals: 1,
  async run (ctx, [ref], values) {
    const store = await ctx.openStore()
    const reader = await DiskReader.open(await ctx.resolveRoot(ref!), store.blocks, { signal: ctx.signal })
    const offset = count(values.offset, '--offset') ?? 0
    if (offset > reader.size) throw new UsageError(`--offset ${offset} is past the end of the image (${reader.size} bytes)`)
    const end = Math.min(reader.size, offset + (count(values.length, '--length') ?? reader.size))
    for (let pos = offset; pos < end; pos += STEP) {
      const bytes = await reader.read(pos, Math.min(STEP, end - pos), { signal: ctx.signal })
      await ctx.write(bytes)
    }
  }
}

export default command
