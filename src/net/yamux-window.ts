import { YamuxStream, StreamState } from '@libp2p/yamux/stream'

const PATCHED = Symbol.for('collective-peer.yamux-window-updates')

interface StreamWindow {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

/**
 * Makes yamux streams grant more receive window once half of it is used, not after every data frame.
 *
 * @libp2p/yamux 8 sends a WINDOW_UPDATE after each data frame it receives. Each is a noise message
 * and a write on its own: 4 000 per GiB on a fast stream (256 KiB frames), and one per block on the
 * slow streams of a swarm, where a frame carries a block or two. Go's and Rust's yamux wait until half
 * the window is used, as this does: the sender still holds half a window of credit when the update
 * leaves, so it never waits for one while the receiver keeps reading. Updates that carry a flag
 * (SYN/ACK), and resuming a paused stream, go through as before. Should a later yamux rename these
 * fields, the comparison is false and every update is sent, as without this.
 */
export function batchYamuxWindowUpdates (): void {
  const proto = YamuxStream.prototype as unknown as Record<string | symbol, unknown>
  if (proto[PATCHED] === true) return
  const sendWindowUpdate = proto.sendWindowUpdate as (this: StreamWindow) => void
  proto.sendWindowUpdate = function (this: StreamWindow): void {
    if (this.state === StreamState.Established && this.recvWindowCapacity > this.recvWindow / 2) return
    sendWindowUpdate.call(this)
  }
  proto[PATCHED] = true
}
