import { Channel } from './channel.js'
import { PROTOCOL, PROTOCOL_VERSION, T, type Message, type Priority, MAX_LIST } from './messages.js'
import { Bitfield } from './bitfield.js'
import { WIRE_COMPRESSION } from '../../dag/wire.js'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

/** What a peer says it holds of a root. */
export interface PeerHave {
  all: boolean
  bitfield?: Bitfield
}

export interface ClientHandlers {
  onMessage(client: PeerClient, message: Message): void
  onClose(client: PeerClient, err?: Error): void
}

/** Time to open a stream to a peer and read its HELLO. */
const OPEN_TIMEOUT = 10_000

/**
 * Our side of a stream to one peer: we send WANT/CANCEL/INTEREST, it answers with BLOCK, DONT_HAVE
 * and HAVE. One per peer, shared by every pull.
 */
export class PeerClient {
  readonly peer: PeerId
  readonly key: string
  private readonly channel: Channel
  /** The peer will send compressed blocks (both sides support the codec and we asked). */
  compress = false
  readonly haves = new Map<string, PeerHave>()

  private constructor (peer: PeerId, channel: Channel) {
    this.peer = peer
    this.key = peer.toString()
    this.channel = channel
  }

  static async open (libp2p: Libp2p, peer: PeerId, handlers: ClientHandlers, options: { compress: boolean, signal?: AbortSignal }): Promise<PeerClient> {
    const signal = AbortSignal.any([AbortSignal.timeout(OPEN_TIMEOUT), ...(options.signal != null ? [options.signal] : [])])
    const stream = await libp2p.dialProtocol(peer, PROTOCOL, { signal })
    const client = new PeerClient(peer, new Channel(stream))
    await client.channel.send({ type: T.HELLO, version: PROTOCOL_VERSION, compress: options.compress ? [WIRE_COMPRESSION] : [] })
    client.compress = options.compress
    void client.read(handlers)
    return client
  }

  private async read (handlers: ClientHandlers): Promise<void> {
    try {
      for await (const message of this.channel.messages()) {
        if (message.type === T.HELLO) {
          this.compress = this.compress && message.compress.includes(WIRE_COMPRESSION)
          continue
        }
        handlers.onMessage(this, message)
      }
      handlers.onClose(this)
    } catch (err) {
      this.channel.abort(err as Error)
      handlers.onClose(this, err as Error)
    }
  }

  async want (cids: CID[], priority: Priority): Promise<void> {
    for (let i = 0; i < cids.length; i += MAX_LIST) {
      await this.channel.send({ type: T.WANT, priority, cids: cids.slice(i, i + MAX_LIST) })
    }
  }

  async cancel (cids: CID[]): Promise<void> {
    for (let i = 0; i < cids.length; i += MAX_LIST) {
      await this.channel.send({ type: T.CANCEL, cids: cids.slice(i, i + MAX_LIST) })
    }
  }

  async interest (root: CID): Promise<void> {
    await this.channel.send({ type: T.INTEREST, root })
  }

  get bytesIn (): number { return this.channel.bytesIn }
  get closed (): boolean { return this.channel.isClosed }

  close (err?: Error): void {
    if (err != null) this.channel.abort(err)
    else void this.channel.close()
  }
}
