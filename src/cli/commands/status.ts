import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { loadOrCreatePeerKey, PEER_KEY_FILE } from '../../net/keys.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Runtime } from '../../runtime/index.js'
import type { Command } from '../command.js'

function rate (bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1024 / 1024).toFixed(1)} MiB/s`
}

const command: Command = {
  usage: 'status',
  summary: 'This host: peer id, listen addresses, connected peers, roots held, transfer totals and rates.',
  help: 'JSON result: {"running", "peerId", "addresses", "peers", "roots", "transfer": {"bytesSent", "bytesReceived", "sendRate", "receiveRate", ...}, "lazy": {"demandBlocks", "demandBytes", "prefetchBlocks", "prefetchBytes"}, "process": {"cpuSeconds", "rssBytes", "heapUsedBytes", "arrayBufferBytes", "gc": {"major", "minor", "pauseMs"}}}\n(lazy: blocks the VMs\' disks fetched from the swarm: on a guest read, and ahead of it from boot profiles)',
  async run (ctx) {
    if (ctx.daemon == null) {
      // No daemon: what is known offline (the identity, if one was ever created).
      let peerId: string | null = null
      const hasKey = await access(join(ctx.dataDir, PEER_KEY_FILE)).then(() => true, () => false)
      if (hasKey) peerId = peerIdFromPrivateKey(await loadOrCreatePeerKey(ctx.dataDir)).toString()
      const store = await ctx.openStore()
      const roots = (await store.pins.list()).length
      ctx.say(`daemon not running${peerId != null ? ` (peer ${peerId})` : ''}; ${roots} roots in the store`)
      ctx.result({ running: false, peerId, addresses: [], peers: 0, roots, transfer: null, process: null })
      return
    }
    const status = await ctx.daemon.status()
    ctx.say(`peer ${status.peerId}`)
    for (const a of status.addresses) ctx.say(`  listening on ${a}`)
    ctx.say(`${status.peers} peers connected, ${status.roots} roots held`)
    const t = status.transfer
    if (t != null) ctx.say(`sent ${t.bytesSent} bytes (${t.blocksSent} blocks, ${rate(t.sendRate)}), received ${t.bytesReceived} bytes (${t.blocksReceived} blocks, ${rate(t.receiveRate)})`)
    const p = status.process
    ctx.say(`process: CPU ${p.cpuSeconds.toFixed(1)} s, ${(p.rssBytes / 1024 / 1024).toFixed(0)} MiB resident, ${p.gc.major} full GCs and ${p.gc.minor} scavenges (${(p.gc.pauseMs / 1000).toFixed(1)} s paused)`)
    const lazy = ctx.daemon.service<Runtime>('nbd')?.stats() ?? null
    if (lazy != null && lazy.demandBlocks + lazy.prefetchBlocks > 0) ctx.say(`VM disks fetched ${lazy.demandBytes} bytes on demand (${lazy.demandBlocks} blocks), ${lazy.prefetchBytes} bytes ahead from boot profiles (${lazy.prefetchBlocks} blocks)`)
    ctx.result({ running: true, ...status, lazy })
  }
}

export default command
