/**
 * The block protocol's channel (src/net/exchange/channel.ts) over a real libp2p stream: two nodes of
 * the project's factory in this process, TCP on 127.0.0.1. What it hands the stream is watched by
 * wrapping the real stream's `send`.
 */
import '../../src/util/polyfill.js'
import { describe, it, expect } from 'vitest'
import { inProcessNodes } from '../helpers/nodes.js'
import { Channel, COALESCE } from '../../src/net/exchange/channel.js'
import { T, type Message } from '../../src/net/exchange/messages.js'
import { rawCid } from '../../src/dag/hash.js'

const PROTOCOL = '/collective-test/channel/1.0.0'

describe('Channel', () => {
  const nodes = inProcessNodes()

  it('hands blocks queued together to the stream in sends of at least COALESCE bytes, and every block arrives intact', async () => {
    const [sender, receiver] = await nodes.pair()

    // 200 blocks of 20 000 bytes (as the chunker's: not a divisor of COALESCE), each its own bytes.
    const blocks = Array.from({ length: 200 }, (_, i) => new Uint8Array(20_000).fill(i % 251).map((b, k) => (b + k) & 0xff))
    const received: Array<Extract<Message, { type: typeof T.BLOCK }>> = []
    const done = new Promise<void>((resolve, reject) => {
      void receiver.handle(PROTOCOL, async (stream) => {
        try {
          await new Channel(stream).each(m => { if (m.type === T.BLOCK) received.push(m) })
          resolve()
        } catch (err) { reject(err) }
      })
    })

    const stream = await sender.dialProtocol(receiver.getMultiaddrs()[0]!, PROTOCOL)
    const sends: number[] = []
    const send = stream.send.bind(stream)
    stream.send = (data) => {
      sends.push(data.byteLength)
      return send(data)
    }
    const channel = new Channel(stream)
    // All queued in one turn of the event loop, as a server answers one read of its store.
    await Promise.all(blocks.map(async data => { await channel.send({ type: T.BLOCK, cid: rawCid(data), compressed: false, data }) }))
    await channel.close()
    await done

    expect(received.map(m => m.cid.toString())).toEqual(blocks.map(b => rawCid(b).toString()))
    received.forEach((m, i) => { expect(Buffer.compare(m.data, blocks[i]!)).toBe(0) })
    // 4 MB in sends of at least COALESCE (256 KiB): at most 16 of them, and only the last may be short. Stopping
    // each send short of the block that crossed the mark sent that block alone, one send in two.
    expect(sends.slice(0, -1).every(n => n >= COALESCE)).toBe(true)
    expect(sends.length).toBeLessThanOrEqual(Math.ceil(blocks.length * 20_000 / COALESCE))
  })
})
