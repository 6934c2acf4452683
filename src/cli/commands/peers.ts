import { NoDaemonError } from '../../daemon/interface.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'peers',
  summary: 'Connected peers: peer id, address, direction, block bytes sent and received, whether a block stream is open.',
  help: 'JSON: one {"peer", "address", "direction", "bytesSent", "bytesReceived", "blockStream"} line per connection, then {"peers": N}.',
  async run (ctx) {
    if (ctx.daemon == null) throw new NoDaemonError(ctx.dataDir)
    const peers = ctx.daemon.peers()
    for (const p of peers) {
      ctx.say(`${p.peer}  ${p.address}  ${p.direction}  sent ${p.bytesSent}  received ${p.bytesReceived}${p.blockStream ? '  blocks' : ''}`)
      ctx.emit(p)
    }
    ctx.result({ peers: new Set(peers.map(p => p.peer)).size })
  }
}

export default command
