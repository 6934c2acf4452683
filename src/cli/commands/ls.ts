import { DiskReader, parseCid } from '../../dag/index.js'
import type { Command } from '../command.js'

function human (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = -1
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(1)} ${units[i]}`
}

const command: Command = {
  usage: 'ls',
  summary: 'List named roots: image size, bytes stored for it, and bytes it shares with other roots.',
  help: 'JSON: one {"name", "root", "size", "stored", "shared"} line per root, then {"roots": N, "storedBytes": N}.',
  async run (ctx) {
    const store = await ctx.openStore()
    const pins = (await store.pins.list()).sort((a, b) => a.name.localeCompare(b.name))
    // For each block: its size and how many roots use it (walks nodes only; leaves are not read).
    const blocks = new Map<string, { size: number, roots: number }>()
    const perPin: Array<Set<string>> = []
    for (const pin of pins) {
      const mine = new Set<string>()
      const note = (id: string, size: number): void => {
        if (mine.has(id)) return
        mine.add(id)
        const entry = blocks.get(id)
        if (entry == null) blocks.set(id, { size, roots: 1 })
        else entry.roots++
      }
      const reader = await DiskReader.open(parseCid(pin.root), store.blocks, { signal: ctx.signal })
      for await (const leaf of reader.walk({ signal: ctx.signal, onNode: ({ cid, bytes }) => note(cid.toString(), bytes.length) })) {
        if (leaf.cid != null) note(leaf.cid.toString(), leaf.length)
      }
      perPin.push(mine)
    }
    const rows = pins.map((pin, i) => {
      let stored = 0
      let shared = 0
      for (const id of perPin[i]!) {
        const { size, roots } = blocks.get(id)!
        stored += size
        if (roots > 1) shared += size
      }
      return { name: pin.name, root: pin.root, size: pin.size, stored, shared }
    })
    for (const row of rows) ctx.emit(row)
    if (!ctx.json) {
      if (rows.length === 0) ctx.say('no roots (import an image first)')
      for (const r of rows) ctx.say(`${r.name.padEnd(24)} ${r.root}  size ${human(r.size).padStart(10)}  stored ${human(r.stored).padStart(10)}  shared ${human(r.shared).padStart(10)}`)
    }
    const storedBytes = [...blocks.values()].reduce((n, b) => n + b.size, 0)
    ctx.result({ roots: rows.length, storedBytes })
  }
}

export default command
