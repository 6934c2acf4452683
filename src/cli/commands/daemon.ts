import { Daemon } from '../../daemon/daemon.js'
import { runCommand } from '../main.js'
import { loadNetConfig } from '../../net/config.js'
import { runtimeService } from '../../runtime/index.js'
import type { DaemonEvent } from '../../daemon/interface.js'
import type { Command } from '../command.js'
import type { Context } from '../context.js'

/** A line for people for each event worth telling; undefined for the rest. */
function describe (event: DaemonEvent): string | undefined {
  switch (event.type) {
    case 'daemon:ready': return `peer ${event.peerId}\n${event.addresses.map(a => `listening on ${a}`).join('\n')}`
    case 'store:recovered': return `store: ${event.blocks} blocks (${event.bytes} bytes) written before the last stop but not committed were verified and kept`
    case 'daemon:stopping': return 'stopping'
    case 'daemon:stopped': return 'stopped'
    case 'bootstrap:connected': return `connected to bootstrap peer ${event.address}`
    case 'bootstrap:failed': return `bootstrap peer ${event.address} unreachable: ${event.reason}`
    case 'service:failed': return `service ${event.name} failed: ${event.error}`
    case 'appliance:accepted': return `appliance ${event.id}: v${event.version} accepted`
    case 'appliance:fetched': return `appliance ${event.id}: v${event.version} fetched and pinned`
    case 'appliance:refused': return `appliance ${event.id}: announcement refused: ${event.reason}`
    default: return undefined
  }
}

const command: Command = {
  usage: 'daemon [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--no-mdns]',
  summary: 'Run the host: join the swarm (libp2p: TCP, noise, yamux, kad-dht, gossipsub, mDNS), serve the blocks this host holds, and run CLI commands sent to its control socket. Stops on SIGINT/SIGTERM.',
  help: `Options:
  --listen MULTIADDR     address to listen on, repeatable (default /ip4/0.0.0.0/tcp/0)
  --bootstrap MULTIADDR  peer to dial at start, /ip4/…/tcp/…/p2p/<peer id>, repeatable
  --no-mdns              do not discover peers on the LAN
Also from the environment (COLLECTIVE_LISTEN, COLLECTIVE_BOOTSTRAP: comma-separated; COLLECTIVE_MDNS=0|1)
and <data-dir>/config.json ({"listen": [...], "bootstrap": [...], "mdns": bool}); flags win.
JSON: one event per line: {"type": "daemon:ready", "peerId", "addresses"}, peer and bootstrap events,
{"type": "store:recovered", "blocks", "bytes"} after a crash, {"type": "daemon:stopped"}.`,
  options: {
    listen: { type: 'string', multiple: true },
    bootstrap: { type: 'string', multiple: true },
    'no-mdns': { type: 'boolean' }
  },
  async run (ctx: Context, _positionals, values) {
    const net = await loadNetConfig(ctx.dataDir, {
      listen: values.listen as string[] | undefined,
      bootstrap: values.bootstrap as string[] | undefined,
      mdns: values['no-mdns'] === true ? false : undefined
    })
    const onEvent = (event: DaemonEvent): void => {
      if (ctx.json) {
        ctx.emit(event)
        return
      }
      const line = describe(event)
      if (line != null) (event.type === 'daemon:ready' ? ctx.io.stdout : ctx.io.stderr).write(line + '\n')
    }
    const daemon = await Daemon.start({
      dataDir: ctx.dataDir,
      net,
      onEvent,
      signal: ctx.signal,
      services: [runtimeService({ fetcher: () => daemon.exchange })],
      runCommand: async (request, output, signal) => await runCommand(request.argv, { ...output, cwd: request.cwd }, signal, daemon)
    })
    if (!ctx.signal.aborted) await new Promise<void>(resolve => { ctx.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
    await daemon.stop()
  }
}

export default command
