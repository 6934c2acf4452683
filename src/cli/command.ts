import type { ParseArgsConfig } from 'node:util'
import type { Context } from './context.js'

export type Options = NonNullable<ParseArgsConfig['options']>

/** A CLI command: its help text, its flags (node:util parseArgs), and what it does. */
export interface Command {
  usage: string
  summary: string
  /** Help for each flag, by name. */
  help?: string
  options?: Options
  /** Exact number of positionals, or [min, max]. */
  positionals?: number | [number, number]
  run(ctx: Context, positionals: string[], values: Record<string, unknown>): Promise<number | void>
}

/** The commands and how to load each; imported only when run. */
export const COMMANDS: Record<string, { summary: string, load: () => Promise<{ default: Command }> }> = {
  import: { summary: 'import a disk image into the store', load: async () => await import('./commands/import.js') },
  export: { summary: 'write an image back to a file', load: async () => await import('./commands/export.js') },
  cat: { summary: 'print a byte range of an image', load: async () => await import('./commands/cat.js') },
  diff: { summary: 'blocks and bytes a host holding <old> needs for <new>', load: async () => await import('./commands/diff.js') },
  ls: { summary: 'list named roots with sizes and shared bytes', load: async () => await import('./commands/ls.js') },
  pin: { summary: 'name a root so gc keeps it (pin <cid> --name N | pin rm N | pin ls)', load: async () => await import('./commands/pin.js') },
  gc: { summary: 'free blocks no pinned root needs', load: async () => await import('./commands/gc.js') },
  fsck: { summary: 're-hash every block; drop corrupt ones', load: async () => await import('./commands/fsck.js') },
  car: { summary: 'CARv1 export/import (car export <cid> out.car | car import in.car)', load: async () => await import('./commands/car.js') }
}
