import { Channel } from './channel.js'
import { FEATURES, PROTOCOL, PROTOCOL_VERSION, T, type Message, type Priority, MAX_LIST } from './messages.js'
import { Bitfield } from './bitfield.js'
import { ZSTD_BATCH } from './codec.js'
import { wireCodecs } from './server.js'
import { ProtocolError } from './frames.js'
import { MAX_BLOCK_SIZE } from '../../dag/node.js'
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
  /** Codecs we offered in HELLO: the peer may send DEFLATEd BLOCKs, or zstd BLOCKS batches, only if listed. */
  private readonly codecs: string[]
  readonly haves = new Map<string, PeerHave>()
  /** Roots the peer answered INTEREST for (with any HAVE, an empty one included). */
  readonly answered = new Set<string>()

  private constructor (peer: PeerId, channel: Channel, codecs: string[]) {
    this.codecs = codecs
    this.peer = peer
    this.key = peer.toString()
    this.channel = channel
  }

  static async open (libp2p: Libp2p, peer: PeerId, handlers: ClientHandlers, options: { compress: boolean, signal?: AbortSignal }): Promise<PeerClient> {
    const signal = AbortSignal.any([AbortSignal.timeout(OPEN_TIMEOUT), ...(options.signal != null ? [options.signal] : [])])
    const stream = await libp2p.dialProtocol(peer, PROTOCOL, { signal })
    const codecs = options.compress ? wireCodecs() : []
    const client = new PeerClient(peer, new Channel(stream), codecs)
    await client.channel.send({ type: T.HELLO, version: PROTOCOL_VERSION, compress: codecs, features: [...FEATURES] })
    void client.read(handlers)
    return client
  }

  private async read (handlers: ClientHandlers): Promise<void> {
    try {
      await this.channel.each(message => {
        if (message.type === T.HELLO) return
        if (message.type === T.BLOCKS) {
          for (const block of this.unbatch(message)) handlers.onMessage(this, block)
          return
        }
        handlers.onMessage(this, message)
      })
      handlers.onClose(this)
    } catch (err) {
      this.channel.abort(err as Error)
      handlers.onClose(this, err as Error)
    }
  }

  /**
   * The blocks of a BLOCKS frame, each as a BLOCK with its share of the frame's bytes. A batch holds
   * at most MAX_BLOCK_SIZE bytes in all (the codec checks the declared sizes before decompressing);
   * each block is then verified against its CID by whoever asked for it.
   */
  private unbatch (message: Extract<Message, { type: typeof T.BLOCKS }>): Array<Extract<Message, { type: typeof T.BLOCK }>> {
    if (!this.codecs.includes(ZSTD_BATCH.name)) throw new ProtocolError('BLOCKS batch, but we did not offer zstd-batch')
    const blocks = ZSTD_BATCH.decode(message.payload, MAX_BLOCK_SIZE)
    if (blocks.length !== message.cids.length) throw new ProtocolError(`BLOCKS lists ${message.cids.length} CIDs for ${blocks.length} blocks`)
    const total = blocks.reduce((n, b) => n + b.length, 0)
    return blocks.map((data, i) => ({ type: T.BLOCK, cid: message.cids[i]!, compressed: false, data, wire: Math.round(message.payload.length * data.length / Math.max(1, total)) }))
  }

  async want (cids: Array<CID | Uint8Array>, priority: Priority): Promise<void> {
    for (let i = 0; i < cids.length; i += MAX_LIST) {
      await this.channel.send({ type: T.WANT, priority, cids: cids.slice(i, i + MAX_LIST) })
    }
  }

  async cancel (cids: Array<CID | Uint8Array>): Promise<void> {
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
