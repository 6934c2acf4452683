import { importImage, defaultName, chunkerParams, type ImportProgressEvent } from '../../dag/index.js'
import { checkPinName } from '../../store/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

function parseSize (text: string | undefined): number | undefined {
  if (text == null) return undefined
  const m = /^(\d+)\s*([kKmM]i?[bB]?)?$/.exec(text.trim())
  if (m == null) throw new UsageError(`--chunk-size "${text}" is not a size (e.g. 16384, 16K, 1M)`)
  const unit = m[2]?.[0]?.toLowerCase()
  return Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 * 1024 : 1)
}

const command: Command = {
  usage: 'import <image> [--name NAME] [--chunker fixed|fastcdc] [--chunk-size BYTES] [--format FMT]',
  summary: 'Import a disk image (raw, qcow2, vmdk, vdi, vhdx, vpc) into the store as a Merkle DAG and pin it. Prints the root CID.',
  help: `Options:
  --name NAME          pin name (default: the file name without extension)
  --chunker KIND       fastcdc (default) or fixed
  --chunk-size BYTES   fastcdc average or fixed size: a power of two, 4K..256K (fastcdc) or 4K..1M (fixed); default 16K
  --format FMT         force the image format instead of detecting it
JSON result: {"root", "size", "blocks", "bytesStored", "name", "format"}`,
  options: {
    name: { type: 'string' },
    chunker: { type: 'string' },
    'chunk-size': { type: 'string' },
    format: { type: 'string' }
  },
  positionals: 1,
  async run (ctx, [path], values) {
    const params = chunkerParams(values.chunker as string | undefined, parseSize(values['chunk-size'] as string | undefined))
    const name = checkPinName((values.name as string | undefined) ?? defaultName(path!))
    const store = await ctx.openStore()
    const result = await importImage(store.blocks, ctx.path(path!), {
      chunker: params,
      format: values.format as string | undefined,
      tmpDir: ctx.tmpDir,
      signal: ctx.signal,
      onProgress: (event: ImportProgressEvent) => {
        if (event.type === 'import:progress') {
          ctx.progress.update({ label: 'import', done: event.scanned, total: event.size }, event)
        }
      }
    })
    await store.pins.set({ name, root: result.root.toString(), size: result.size, created: new Date().toISOString() })
    ctx.note(`imported ${path} (${result.format}, ${result.size} bytes) as "${name}": ${result.blocks} blocks, ${result.bytesStored} new bytes stored`)
    ctx.say(result.root.toString())
    ctx.result({ root: result.root.toString(), size: result.size, blocks: result.blocks, bytesStored: result.bytesStored, name, format: result.format })
  }
}

export default command
