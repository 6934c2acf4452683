import type { Socket } from 'node:net'
import {
  BASE_ALLOCATION_ID, CMD, CMD_FLAG, ERR, REPLY_FLAG_DONE, REPLY_TYPE, REQUEST_MAGIC, REQUEST_SIZE,
  SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC
} from './protocol.js'
import { ProtocolViolation } from './violation.js'
import { BufferPool } from './buffer-pool.js'
import { isSystemError } from '../../errors.js'
import type { SocketReader } from './socket-reader.js'
import type { Negotiated } from './negotiate.js'
import type { NbdEvent, NbdExtent } from '../interface.js'

/** READ replies (header and data), shared by every connection. */
const replies = new BufferPool(64 * 1024 * 1024)
/** Extents in one BLOCK_STATUS reply; the client asks again for the rest. */
const MAX_EXTENTS = 8192
/** Stop taking requests while this many reply bytes wait for a slow client. */
const WRITE_HIGH_WATER = 64 * 1024 * 1024
const COMMAND_NAMES: Record<number, string> = { 0: 'READ', 1: 'WRITE', 2: 'DISC', 3: 'FLUSH', 4: 'TRIM', 5: 'CACHE', 6: 'WRITE_ZEROES', 7: 'BLOCK_STATUS' }
/** The flags each command accepts (anything else is EINVAL). */
const ALLOWED_FLAGS: Record<number, number> = {
  [CMD.READ]: CMD_FLAG.DF,
  [CMD.WRITE]: CMD_FLAG.FUA,
  [CMD.FLUSH]: 0,
  [CMD.TRIM]: CMD_FLAG.FUA,
  [CMD.WRITE_ZEROES]: CMD_FLAG.FUA | CMD_FLAG.NO_HOLE,
  [CMD.BLOCK_STATUS]: CMD_FLAG.REQ_ONE,
  [CMD.DISC]: 0
}

interface Request {
  flags: number
  type: number
  /** The client's 8-byte handle, echoed in the reply (a view of the request header). */
  cookie: Buffer
  offset: number
  length: number
  payload?: Buffer
}

/** Offsets past 2^53 cannot be inside any export: they read as MAX_SAFE_INTEGER (the range check fails them). */
const MAX_OFFSET_HIGH = 2 ** 21

/** A request we refuse: an error number and a message for the client. */
class RequestError extends Error {
  constructor (readonly errno: number, message: string) { super(message) }
}

export interface TransmissionInit {
  id: number
  maxRequest: number
  maxInflight: number
  signal: AbortSignal
  onEvent(event: NbdEvent): void
}

/**
 * The transmission phase of one connection: reads requests in order, serves up to `maxInflight` at
 * once and answers each as it completes (clients match replies by cookie). Resolves with the reason
 * the connection ended; throws ProtocolViolation when the client breaks framing.
 */
export class Transmission {
  private readonly socket: Socket
  private readonly reader: SocketReader
  private readonly session: Negotiated
  private readonly init: TransmissionInit
  private inflight = 0
  private readonly idle: Array<() => void> = []

  constructor (socket: Socket, reader: SocketReader, session: Negotiated, init: TransmissionInit) {
    this.socket = socket
    this.reader = reader
    this.session = session
    this.init = init
  }

  async run (): Promise<string> {
    const size = this.session.export.size
    const done = (): void => {
      this.inflight--
      this.idle.shift()?.()
    }
    while (true) {
      if (this.inflight >= this.init.maxInflight || this.socket.writableLength > WRITE_HIGH_WATER) await this.slot()
      // Requests usually arrive several to a chunk: take them without waiting when they are here.
      const header = this.reader.tryRead(REQUEST_SIZE) ?? await this.reader.read(REQUEST_SIZE)
      if (header.readUInt32BE(0) !== REQUEST_MAGIC) throw new ProtocolViolation('bad request magic')
      const high = header.readUInt32BE(16)
      const request: Request = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        // The header is a view of a chunk the socket gave us and nobody writes to again.
        cookie: header.subarray(8, 16),
        offset: high >= MAX_OFFSET_HIGH ? Number.MAX_SAFE_INTEGER : high * 2 ** 32 + header.readUInt32BE(20),
        length: header.readUInt32BE(24)
      }
      if (request.type === CMD.WRITE) {
        if (request.length > this.init.maxRequest) {
          // The payload cannot be skipped cheaply; the protocol lets us drop the connection.
          this.errorReply(request, ERR.EOVERFLOW, `write of ${request.length} bytes exceeds the limit of ${this.init.maxRequest}`)
          throw new ProtocolViolation(`write of ${request.length} bytes exceeds the limit`)
        }
        request.payload = await this.reader.read(request.length)
      }
      if (request.type === CMD.DISC) {
        await this.drain()
        return 'client disconnected (NBD_CMD_DISC)'
      }
      this.inflight++
      this.serve(request, size).then(done, done)
    }
  }

  /** Waits for a free request slot and for the client to take its replies. */
  private async slot (): Promise<void> {
    while (this.inflight >= this.init.maxInflight || this.socket.writableLength > WRITE_HIGH_WATER) {
      if (this.socket.destroyed) return
      if (this.inflight >= this.init.maxInflight) await new Promise<void>(resolve => this.idle.push(resolve))
      else {
        await new Promise<void>(resolve => {
          const done = (): void => { this.socket.off('drain', done); this.socket.off('close', done); resolve() }
          this.socket.on('drain', done)
          this.socket.on('close', done)
        })
      }
    }
  }

  private async drain (): Promise<void> {
    while (this.inflight > 0) await new Promise<void>(resolve => this.idle.push(resolve))
  }

  private async serve (request: Request, size: number): Promise<void> {
    try {
      this.check(request, size)
      await this.execute(request)
    } catch (err) {
      if (err instanceof RequestError) {
        this.errorReply(request, err.errno, err.message)
        return
      }
      if (this.init.signal.aborted) return
      const message = (err as Error)?.message ?? String(err)
      this.init.onEvent({ type: 'nbd:request-error', id: this.init.id, command: COMMAND_NAMES[request.type] ?? String(request.type), offset: request.offset, length: request.length, error: message })
      this.errorReply(request, errnoOf(err), message)
    }
  }

  private check (request: Request, size: number): void {
    const { type, flags, offset, length } = request
    const allowed = ALLOWED_FLAGS[type]
    if (allowed == null) throw new RequestError(ERR.EINVAL, `unknown command ${type}`)
    if ((flags & ~allowed) !== 0) throw new RequestError(ERR.EINVAL, `flags 0x${flags.toString(16)} are not valid for ${COMMAND_NAMES[type]}`)
    if ((flags & CMD_FLAG.DF) !== 0 && !this.session.structured) throw new RequestError(ERR.EINVAL, 'NBD_CMD_FLAG_DF needs structured replies')
    if (type === CMD.FLUSH) return
    if (length === 0) throw new RequestError(ERR.EINVAL, `${COMMAND_NAMES[type]} of zero bytes`)
    if (offset + length > size) throw new RequestError(ERR.EINVAL, `${COMMAND_NAMES[type]} of [${offset}, +${length}) is past the end of the export (${size} bytes)`)
    if (type === CMD.READ && length > this.init.maxRequest) throw new RequestError(ERR.EINVAL, `read of ${length} bytes exceeds the limit of ${this.init.maxRequest}`)
    if ((type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES) && this.session.export.readOnly) {
      throw new RequestError(ERR.EPERM, 'the export is read-only')
    }
    if (type === CMD.BLOCK_STATUS && !this.session.baseAllocation) throw new RequestError(ERR.EINVAL, 'no metadata context was negotiated (base:allocation)')
  }

  private async execute (request: Request): Promise<void> {
    const exp = this.session.export
    const fua = (request.flags & CMD_FLAG.FUA) !== 0
    const signal = this.init.signal
    switch (request.type) {
      case CMD.READ: {
        // The reply header and the data in one pooled buffer: the export reads straight into it.
        const headerLength = this.session.structured ? 28 : 16
        const reply = replies.take(headerLength + request.length)
        const into = reply.subarray(headerLength, headerLength + request.length)
        let data: Uint8Array
        try {
          data = await exp.read(request.offset, request.length, { signal, into })
        } catch (err) {
          replies.give(reply) // an export never writes into `into` once its read has settled
          throw err
        }
        if (data.buffer === into.buffer && data.byteOffset === into.byteOffset && data.length === into.length) {
          this.readHeader(request, reply)
          if (this.socket.destroyed) return
          this.socket.write(reply.subarray(0, headerLength + request.length), () => { replies.give(reply) })
        } else {
          replies.give(reply)
          this.readReply(request, data)
        }
        return
      }
      case CMD.WRITE:
        if (exp.write == null) throw new RequestError(ERR.EPERM, 'the export is read-only')
        await exp.write(request.offset, request.payload!, { fua })
        break
      case CMD.FLUSH:
        await exp.flush?.()
        break
      case CMD.TRIM:
        await exp.trim?.(request.offset, request.length, { fua })
        break
      case CMD.WRITE_ZEROES:
        if (exp.writeZeroes != null) await exp.writeZeroes(request.offset, request.length, { fua })
        else if (exp.write != null) await writeZeroesByWrite(exp.write.bind(exp), request.offset, request.length, fua, this.init.maxRequest)
        else throw new RequestError(ERR.EPERM, 'the export is read-only')
        break
      case CMD.BLOCK_STATUS: {
        let extents = await exp.extents(request.offset, request.length, { signal })
        if ((request.flags & CMD_FLAG.REQ_ONE) !== 0) extents = extents.slice(0, 1)
        this.blockStatusReply(request, extents)
        return
      }
    }
    this.simpleReply(request.cookie, 0)
  }

  // ---- replies ------------------------------------------------------------------------------------

  private send (parts: Uint8Array[]): void {
    if (this.socket.destroyed) return
    this.socket.cork()
    for (const part of parts) this.socket.write(part)
    this.socket.uncork()
  }

  private simpleReply (cookie: Buffer, errno: number, data?: Uint8Array): void {
    const header = Buffer.alloc(16)
    header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0)
    header.writeUInt32BE(errno, 4)
    cookie.copy(header, 8)
    this.send(data != null ? [header, data] : [header])
  }

  private chunkHeader (cookie: Buffer, flags: number, type: number, length: number): Buffer {
    const header = Buffer.alloc(20)
    header.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0)
    header.writeUInt16BE(flags, 4)
    header.writeUInt16BE(type, 6)
    cookie.copy(header, 8)
    header.writeUInt32BE(length, 16)
    return header
  }

  /** Writes the header of a READ's reply into the first 16 (simple) or 28 (structured) bytes of `out`. */
  private readHeader (request: Request, out: Buffer): void {
    if (!this.session.structured) {
      out.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0)
      out.writeUInt32BE(0, 4)
      request.cookie.copy(out, 8)
      return
    }
    out.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0)
    out.writeUInt16BE(REPLY_FLAG_DONE, 4)
    out.writeUInt16BE(REPLY_TYPE.OFFSET_DATA, 6)
    request.cookie.copy(out, 8)
    out.writeUInt32BE(8 + request.length, 16)
    out.writeUInt32BE(Math.floor(request.offset / 2 ** 32), 20)
    out.writeUInt32BE(request.offset >>> 0, 24)
  }

  private readReply (request: Request, data: Uint8Array): void {
    if (!this.session.structured) {
      this.simpleReply(request.cookie, 0, data)
      return
    }
    const header = this.chunkHeader(request.cookie, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, 8 + data.length)
    const offset = Buffer.alloc(8)
    offset.writeBigUInt64BE(BigInt(request.offset), 0)
    this.send([header, offset, data])
  }

  private blockStatusReply (request: Request, extents: NbdExtent[]): void {
    const count = Math.min(extents.length, MAX_EXTENTS)
    const payload = Buffer.alloc(4 + 8 * count)
    payload.writeUInt32BE(BASE_ALLOCATION_ID, 0)
    for (let i = 0; i < count; i++) {
      const extent = extents[i]!
      payload.writeUInt32BE(extent.length, 4 + 8 * i)
      payload.writeUInt32BE(extent.zero ? STATE_HOLE | STATE_ZERO : 0, 8 + 8 * i)
    }
    this.send([this.chunkHeader(request.cookie, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, payload.length), payload])
  }

  private errorReply (request: Request, errno: number, message: string): void {
    if (!this.session.structured) {
      this.simpleReply(request.cookie, errno)
      return
    }
    const text = Buffer.from(message.slice(0, 1024))
    const payload = Buffer.alloc(6 + text.length)
    payload.writeUInt32BE(errno, 0)
    payload.writeUInt16BE(text.length, 4)
    text.copy(payload, 6)
    this.send([this.chunkHeader(request.cookie, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, payload.length), payload])
  }
}

/** The NBD error number for a failure of the export (a missing block is an I/O error to the guest). */
function errnoOf (err: unknown): number {
  if (isSystemError(err, 'ENOSPC') || isSystemError(err, 'EDQUOT')) return ERR.ENOSPC
  if (isSystemError(err, 'ENOMEM')) return ERR.ENOMEM
  return ERR.EIO
}

async function writeZeroesByWrite (write: (offset: number, bytes: Uint8Array, options: { fua: boolean }) => Promise<void>, offset: number, length: number, fua: boolean, step: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(length, step, 1024 * 1024))
  for (let at = 0; at < length; at += zeros.length) {
    const n = Math.min(zeros.length, length - at)
    await write(offset + at, zeros.subarray(0, n), { fua })
  }
}
