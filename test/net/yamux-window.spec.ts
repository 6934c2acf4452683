/**
 * Yamux receive-window updates (src/net/yamux-window.ts): a receiver grants more window once half
 * of it is used, not after every data frame. Two nodes of the project's factory, in this process,
 * over real TCP on 127.0.0.1.
 */
import '../../src/util/polyfill.js'
import { describe, it, expect } from 'vitest'
import { YamuxStream } from '@libp2p/yamux/stream'
import { inProcessNodes } from '../helpers/nodes.js'

const PROTOCOL = '/collective-test/yamux-window/1.0.0'
const MiB = 1024 * 1024
const CHUNK = 64 * 1024

describe('yamux window updates', () => {
  const nodes = inProcessNodes()

  it('a stream receiving 16 MiB sends far fewer window updates than it receives data frames, and loses nothing', async () => {
    const [sender, receiver] = await nodes.pair()

    // Count, on every yamux stream of this process, the data frames received and the window updates
    // that went out (an update resets the remaining capacity to the whole window).
    const proto = YamuxStream.prototype as any
    const handleData = proto.handleData
    const sendWindowUpdate = proto.sendWindowUpdate
    let frames = 0
    let updates = 0
    proto.handleData = function (this: any, frame: unknown) {
      frames++
      return handleData.call(this, frame)
    }
    proto.sendWindowUpdate = function (this: any) {
      const before = this.recvWindowCapacity
      sendWindowUpdate.call(this)
      if (this.recvWindowCapacity !== before) updates++
    }
    try {
      let received = 0
      let wrong = 0
      const done = new Promise<void>((resolve, reject) => {
        void receiver.handle(PROTOCOL, async (stream) => {
          try {
            for await (const chunk of stream) {
              for (const bytes of chunk instanceof Uint8Array ? [chunk] : chunk) {
                // Every byte at offset p is (p / CHUNK) % 251: checked every 4 KiB and at each end.
                const check = (p: number): void => { if (bytes[p - received] !== Math.floor(p / CHUNK) % 251) wrong++ }
                for (let p = Math.ceil(received / 4096) * 4096; p < received + bytes.length; p += 4096) check(p)
                if (bytes.length > 0) check(received + bytes.length - 1)
                received += bytes.length
              }
            }
            resolve()
          } catch (err) { reject(err) }
        })
      })
      const stream = await sender.dialProtocol(receiver.getMultiaddrs()[0]!, PROTOCOL)
      for (let sent = 0; sent < 16 * MiB; sent += CHUNK) {
        const chunk = new Uint8Array(CHUNK).fill((sent / CHUNK) % 251)
        if (!stream.send(chunk)) {
          await new Promise<void>(resolve => { stream.addEventListener('drain', () => { resolve() }, { once: true }) })
        }
      }
      await stream.close()
      await done
      expect(received).toBe(16 * MiB)
      expect(wrong).toBe(0)
      // @libp2p/yamux alone answers each data frame with an update (updates ~ frames).
      expect(frames).toBeGreaterThan(16)
      expect(updates).toBeLessThan(frames / 4)
    } finally {
      proto.handleData = handleData
      proto.sendWindowUpdate = sendWindowUpdate
    }
  })
})
