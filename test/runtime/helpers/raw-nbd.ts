import { connect, type Socket } from 'node:net'

/**
 * A deliberately low-level NBD client for protocol tests: it sends exactly the bytes a test writes
 * (malformed ones included) and reads replies frame by frame.
 */
export class RawNbd {
  private chunks: Buffer[] = []
  private buffered = 0
  private ended = false
  private waiter?: () => void

  private constructor (readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => { this.chunks.push(chunk); this.buffered += chunk.length; this.waiter?.() })
    socket.on('close', () => { this.ended = true; this.waiter?.() })
    socket.on('error', () => { this.ended = true; this.waiter?.() })
  }

  static async connect (path: string): Promise<RawNbd> {
    const socket = connect(path)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawNbd(socket)
  }

  /** Exactly n bytes, or undefined if the server closed the connection first. */
  async read (n: number, timeoutMs = 10_000): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs
    while (this.buffered < n) {
      if (this.ended) return undefined
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes`)
      await new Promise<void>(resolve => { this.waiter = resolve; setTimeout(resolve, 100) })
    }
    const all = Buffer.concat(this.chunks)
    this.chunks = [all.subarray(n)]
    this.buffered -= n
    return all.subarray(0, n)
  }

  /** Resolves true once the server has closed the connection (within the timeout). */
  async closed (timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.ended && Date.now() < deadline) await new Promise<void>(resolve => { this.waiter = resolve; setTimeout(resolve, 100) })
    return this.ended
  }

  write (bytes: Uint8Array): void { this.socket.write(bytes) }

  /** Reads the greeting and sends client flags (fixed newstyle, no zeroes). */
  async handshake (): Promise<void> {
    const hello = await this.read(18)
    if (hello == null || hello.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('no NBD greeting')
    const flags = Buffer.alloc(4)
    flags.writeUInt32BE(3, 0)
    this.write(flags)
  }

  option (option: number, data: Uint8Array = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16)
    header.write('IHAVEOPT', 0, 'latin1')
    header.writeUInt32BE(option, 8)
    header.writeUInt32BE(data.length, 12)
    this.write(Buffer.concat([header, data]))
  }

  async optionReply (): Promise<{ option: number, type: number, data: Buffer } | undefined> {
    const header = await this.read(20)
    if (header == null) return undefined
    if (header.readBigUInt64BE(0) !== 0x3e889045565a9n) throw new Error('bad option reply magic')
    const length = header.readUInt32BE(16)
    const data = length > 0 ? await this.read(length) : Buffer.alloc(0)
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: data ?? Buffer.alloc(0) }
  }

  /** OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT base:allocation, OPT_GO; returns the export size. */
  async go (name: string, options: { structured?: boolean, meta?: boolean } = {}): Promise<number> {
    if (options.structured !== false) {
      this.option(8)
      if ((await this.optionReply())?.type !== 1) throw new Error('structured replies refused')
    }
    if (options.meta === true) {
      this.option(10, metaContextData(name, ['base:allocation']))
      while ((await this.optionReply())?.type !== 1) { /* META_CONTEXT replies, then ACK */ }
    }
    this.option(7, goData(name, []))
    let size = -1
    while (true) {
      const reply = await this.optionReply()
      if (reply == null) throw new Error('closed during GO')
      if (reply.type === 3 && reply.data.readUInt16BE(0) === 0) size = Number(reply.data.readBigUInt64BE(2))
      if (reply.type === 1) return size
      if (reply.type >= 0x80000000) throw new Error(`GO failed: 0x${reply.type.toString(16)} ${reply.data.toString()}`)
    }
  }

  request (type: number, offset: number, length: number, options: { cookie?: bigint, flags?: number, payload?: Uint8Array } = {}): void {
    const header = Buffer.alloc(28)
    header.writeUInt32BE(0x25609513, 0)
    header.writeUInt16BE(options.flags ?? 0, 4)
    header.writeUInt16BE(type, 6)
    header.writeBigUInt64BE(options.cookie ?? 1n, 8)
    header.writeBigUInt64BE(BigInt(offset), 16)
    header.writeUInt32BE(length, 24)
    this.write(options.payload != null ? Buffer.concat([header, options.payload]) : header)
  }

  /** One structured reply chunk (or a simple reply); `error` is the NBD errno (0 = success). */
  async reply (): Promise<{ structured: boolean, type: number, flags: number, cookie: bigint, error: number, payload: Buffer } | undefined> {
    const magic = await this.read(4)
    if (magic == null) return undefined
    if (magic.readUInt32BE(0) === 0x67446698) {
      const rest = await this.read(12)
      if (rest == null) return undefined
      return { structured: false, type: 0, flags: 1, cookie: rest.readBigUInt64BE(4), error: rest.readUInt32BE(0), payload: Buffer.alloc(0) }
    }
    if (magic.readUInt32BE(0) !== 0x668e33ef) throw new Error('bad reply magic')
    const rest = await this.read(16)
    if (rest == null) return undefined
    const length = rest.readUInt32BE(12)
    const payload = length > 0 ? await this.read(length) : Buffer.alloc(0)
    if (payload == null) return undefined
    const type = rest.readUInt16BE(2)
    const error = (type & 0x8000) !== 0 ? payload.readUInt32BE(0) : 0
    return { structured: true, type, flags: rest.readUInt16BE(0), cookie: rest.readBigUInt64BE(4), error, payload }
  }

  destroy (): void { this.socket.destroy() }
}

export function goData (name: string, infos: number[]): Buffer {
  const n = Buffer.from(name)
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length)
  out.writeUInt32BE(n.length, 0)
  n.copy(out, 4)
  out.writeUInt16BE(infos.length, 4 + n.length)
  infos.forEach((info, i) => out.writeUInt16BE(info, 6 + n.length + 2 * i))
  return out
}

export function metaContextData (name: string, queries: string[]): Buffer {
  const parts: Buffer[] = []
  const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(v, 0); return b }
  const n = Buffer.from(name)
  parts.push(u32(n.length), n, u32(queries.length))
  for (const q of queries) { const b = Buffer.from(q); parts.push(u32(b.length), b) }
  return Buffer.concat(parts)
}
