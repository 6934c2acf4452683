import type { Manifest } from '../publish/index.js'
import type { Context } from './context.js'

/** What `publish` and `announce` tell about a version: the CLI contract's {id, version, root}, and more. */
export function versionResult (manifest: Manifest): { id: string, version: number, root: string, disks: Array<{ name: string, root: string, size: number }> } {
  const disks = manifest.disks.map(d => ({ name: d.name, root: d.root.toString(), size: d.size }))
  const program = manifest.disks.findIndex(d => d.role === 'program')
  return { id: manifest.id.toString(), version: manifest.version, root: disks[Math.max(program, 0)]!.root, disks }
}

/**
 * Sends a recorded version out through the daemon (gossip now, the DHT for later hosts). Without a
 * daemon, says so: the daemon announces the latest recorded version when it starts.
 */
export async function announceRecorded (ctx: Context, id: string, envelope: Uint8Array): Promise<{ gossipPeers: number, dht: boolean } | null> {
  if (ctx.daemon != null) return await ctx.daemon.announcer.announce(id, envelope)
  ctx.note('no daemon is running: the daemon announces this version when it starts')
  return null
}
