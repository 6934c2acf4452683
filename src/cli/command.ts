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
  /** Deletes blocks (gc, fsck): inside the daemon, runs alone, never beside an import or a pull. */
  exclusive?: boolean
  run(ctx: Context, positionals: string[], values: Record<string, unknown>): Promise<number | void>
}

/** The commands and how to load each; imported only when run. */
export const COMMANDS: Record<string, { summary: string, local?: boolean, load: () => Promise<{ default: Command }> }> = {
  daemon: { summary: 'run the host: join the swarm, serve blocks, run commands for the CLI', local: true, load: async () => await import('./commands/daemon.js') },
  import: { summary: 'import a disk image into the store', load: async () => await import('./commands/import.js') },
  export: { summary: 'write an image back to a file', load: async () => await import('./commands/export.js') },
  cat: { summary: 'print a byte range of an image', load: async () => await import('./commands/cat.js') },
  diff: { summary: 'blocks and bytes a host holding <old> needs for <new>', load: async () => await import('./commands/diff.js') },
  ls: { summary: 'list named roots with sizes and shared bytes', load: async () => await import('./commands/ls.js') },
  pin: { summary: 'name a root so gc keeps it (pin <cid> --name N | pin rm N | pin ls)', load: async () => await import('./commands/pin.js') },
  gc: { summary: 'free blocks no pinned root needs', load: async () => await import('./commands/gc.js') },
  fsck: { summary: 're-hash every block; drop corrupt ones', load: async () => await import('./commands/fsck.js') },
  pull: { summary: 'fetch a root from the swarm (DHT providers, connected peers) and pin it', load: async () => await import('./commands/pull.js') },
  status: { summary: 'this host: peer id, addresses, peers, roots, transfer rates', load: async () => await import('./commands/status.js') },
  peers: { summary: 'connected peers with their addresses and bytes exchanged', load: async () => await import('./commands/peers.js') },
  key: { summary: 'publisher keys: key create --name N | key list | key export N', load: async () => await import('./commands/key.js') },
  publish: { summary: 'sign and announce a new version of an appliance (appliance.json)', load: async () => await import('./commands/publish.js') },
  sign: { summary: 'add a signature to a partly signed manifest (publish --no-announce --out)', local: true, load: async () => await import('./commands/sign.js') },
  announce: { summary: 'announce a manifest signed by enough keys (publish --no-announce, then sign)', load: async () => await import('./commands/announce.js') },
  subscribe: { summary: 'follow an appliance: fetch each new valid version (only what changed)', load: async () => await import('./commands/subscribe.js') },
  update: { summary: 'check the swarm for a newer version of an appliance now', load: async () => await import('./commands/update.js') },
  rollback: { summary: 'go back to the previous version of an appliance (no network)', load: async () => await import('./commands/rollback.js') },
  appliance: { summary: 'appliances here: appliance ls | show <id> | versions <id>', load: async () => await import('./commands/appliance.js') },
  log: { summary: 'appliance events: accepted, refused (why), fetched, rollback', load: async () => await import('./commands/log.js') },
  run: { summary: 'boot a disk under QEMU (NBD from the store, copy-on-write layer, serial console)', local: true, load: async () => await import('./commands/run.js') },
  start: { summary: 'start a VM in the daemon and return (run --detach)', load: async () => await import('./commands/start.js') },
  ps: { summary: 'list VMs: state, pid, accelerator, memory, layer size, forwards', local: true, load: async () => await import('./commands/ps.js') },
  console: { summary: "a VM's serial console: the log so far, then live (Ctrl-] detaches)", local: true, load: async () => await import('./commands/console.js') },
  stop: { summary: 'shut a VM down (ACPI power button, kill after a timeout): stop <vm>|--all', local: true, load: async () => await import('./commands/stop.js') },
  reset: { summary: "discard a stopped VM's copy-on-write layer", local: true, load: async () => await import('./commands/reset.js') },
  car: { summary: 'CARv1 export/import (car export <cid> out.car | car import in.car)', load: async () => await import('./commands/car.js') }
}
