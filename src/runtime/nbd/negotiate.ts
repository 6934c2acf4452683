import type { Socket } from 'node:net'
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  IHAVEOPT, INFO, NBDMAGIC, OPT, OPTION_REPLY_MAGIC, REP, TF
} from './protocol.js'
import { ProtocolViolation } from './violation.js'
import type { SocketReader } from './socket-reader.js'
import type { ExportResolver, NbdExport } from '../interface.js'

/** Option data larger than this closes the connection (names are ≤ 4096 bytes; queries are short). */
const MAX_OPTION_DATA = 64 * 1024
/** Options one connection may send before it must pick an export. */
const MAX_OPTIONS = 1024
/** Strings (export names, queries) longer than this are refused (the protocol's own limit). */
const MAX_STRING = 4096

/** The outcome of a negotiation that ended in the transmission phase. */
export interface Negotiated {
  name: string
  export: NbdExport
  structured: boolean
  /** Whether `base:allocation` was selected for this export (BLOCK_STATUS allowed). */
  baseAllocation: boolean
  /** The client takes the 124 zero bytes after NBD_OPT_EXPORT_NAME's reply off. */
  noZeroes: boolean
}

export interface NegotiateInit {
  resolve: ExportResolver
  list?(): string[]
  defaultExport?: string
  maxRequest: number
  signal?: AbortSignal
}

/** The transmission flags we send for an export. */
export function transmissionFlags (exp: NbdExport, structured: boolean): number {
  let flags = TF.HAS_FLAGS | TF.SEND_FLUSH
  if (exp.readOnly) flags |= TF.READ_ONLY
  else {
    flags |= TF.SEND_FUA
    if (exp.trim != null) flags |= TF.SEND_TRIM
    if (exp.writeZeroes != null || exp.write != null) flags |= TF.SEND_WRITE_ZEROES
  }
  // We always answer a READ in one chunk, so "don't fragment" costs nothing.
  if (structured) flags |= TF.SEND_DF
  if (exp.multiConn) flags |= TF.CAN_MULTI_CONN
  return flags
}

class OptionData {
  private at = 0
  constructor (readonly bytes: Buffer) {}
  get left (): number { return this.bytes.length - this.at }
  u16 (): number | undefined {
    if (this.left < 2) return undefined
    const v = this.bytes.readUInt16BE(this.at); this.at += 2; return v
  }

  u32 (): number | undefined {
    if (this.left < 4) return undefined
    const v = this.bytes.readUInt32BE(this.at); this.at += 4; return v
  }

  /** A u32-length-prefixed string, or undefined if it does not fit or is too long. */
  string (): string | undefined {
    const length = this.u32()
    if (length == null || length > MAX_STRING || length > this.left) return undefined
    const s = this.bytes.toString('utf8', this.at, this.at + length); this.at += length; return s
  }
}

/**
 * The server's side of the fixed newstyle handshake and option haggling. Resolves with the export
 * the client chose, or undefined when it aborted; throws ProtocolViolation when the client breaks the
 * protocol (the caller closes the connection).
 */
export async function negotiate (socket: Socket, reader: SocketReader, init: NegotiateInit): Promise<Negotiated | undefined> {
  const hello = Buffer.alloc(18)
  hello.writeBigUInt64BE(NBDMAGIC, 0)
  hello.writeBigUInt64BE(IHAVEOPT, 8)
  hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16)
  socket.write(hello)
  const clientFlags = (await reader.read(4)).readUInt32BE(0)
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`)
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0

  let structured = false
  let meta: { exportName: string, base: boolean } | undefined

  const reply = (option: number, type: number, data: Uint8Array = Buffer.alloc(0)): void => {
    const header = Buffer.alloc(20)
    header.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0)
    header.writeUInt32BE(option, 8)
    header.writeUInt32BE(type, 12)
    header.writeUInt32BE(data.length, 16)
    socket.write(header)
    if (data.length > 0) socket.write(data)
  }
  const error = (option: number, type: number, message: string): void => { reply(option, type, Buffer.from(message)) }
  const lookup = async (name: string): Promise<NbdExport | undefined> => {
    const wanted = name === '' && init.defaultExport != null ? init.defaultExport : name
    return await init.resolve(wanted, { signal: init.signal })
  }

  for (let count = 0; count < MAX_OPTIONS; count++) {
    const header = await reader.read(16)
    if (header.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation('bad option magic')
    const option = header.readUInt32BE(8)
    const length = header.readUInt32BE(12)
    if (length > MAX_OPTION_DATA) throw new ProtocolViolation(`option ${option} carries ${length} bytes (limit ${MAX_OPTION_DATA})`)
    const data = new OptionData(length > 0 ? await reader.read(length) : Buffer.alloc(0))

    switch (option) {
      case OPT.EXPORT_NAME: {
        // No error reply is possible here: an unknown export closes the connection.
        if (length > MAX_STRING) throw new ProtocolViolation('export name too long')
        const name = data.bytes.toString('utf8')
        const exp = await lookup(name)
        if (exp == null) throw new ProtocolViolation(`unknown export "${name}" (NBD_OPT_EXPORT_NAME)`)
        const out = Buffer.alloc(noZeroes ? 10 : 134)
        out.writeBigUInt64BE(BigInt(exp.size), 0)
        out.writeUInt16BE(transmissionFlags(exp, structured), 8)
        socket.write(out)
        const base = meta?.exportName === name && meta.base
        return { name, export: exp, structured, baseAllocation: structured && base, noZeroes }
      }
      case OPT.ABORT:
        reply(option, REP.ACK)
        return undefined
      case OPT.LIST: {
        if (length !== 0) { error(option, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data'); break }
        for (const name of init.list?.() ?? []) {
          const bytes = Buffer.from(name)
          const out = Buffer.alloc(4 + bytes.length)
          out.writeUInt32BE(bytes.length, 0)
          bytes.copy(out, 4)
          reply(option, REP.SERVER, out)
        }
        reply(option, REP.ACK)
        break
      }
      case OPT.STARTTLS:
        error(option, REP.ERR_POLICY, 'TLS is not offered: the export is a unix socket only its owner can open')
        break
      case OPT.INFO:
      case OPT.GO: {
        const name = data.string()
        const count = data.u16()
        if (name == null || count == null || data.left !== count * 2) {
          error(option, REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO (name length, info count and data length disagree)')
          break
        }
        const requests = new Set<number>()
        for (let i = 0; i < count; i++) requests.add(data.u16()!)
        const exp = await lookup(name)
        if (exp == null) { error(option, REP.ERR_UNKNOWN, `no export named "${name}"`); break }
        // Each info is its own NBD_REP_INFO (QEMU rejects two in one reply).
        const exportInfo = Buffer.alloc(12)
        exportInfo.writeUInt16BE(INFO.EXPORT, 0)
        exportInfo.writeBigUInt64BE(BigInt(exp.size), 2)
        exportInfo.writeUInt16BE(transmissionFlags(exp, structured), 10)
        reply(option, REP.INFO, exportInfo)
        if (requests.has(INFO.NAME)) reply(option, REP.INFO, Buffer.concat([u16(INFO.NAME), Buffer.from(name)]))
        if (requests.has(INFO.DESCRIPTION) && exp.description != null) {
          reply(option, REP.INFO, Buffer.concat([u16(INFO.DESCRIPTION), Buffer.from(exp.description.slice(0, MAX_STRING))]))
        }
        if (requests.has(INFO.BLOCK_SIZE)) {
          const sizes = Buffer.alloc(14)
          sizes.writeUInt16BE(INFO.BLOCK_SIZE, 0)
          sizes.writeUInt32BE(1, 2) // any alignment
          sizes.writeUInt32BE(4096, 6) // preferred
          sizes.writeUInt32BE(init.maxRequest, 10) // largest READ/WRITE
          reply(option, REP.INFO, sizes)
        }
        reply(option, REP.ACK)
        if (option === OPT.GO) {
          const base = meta?.exportName === name && meta.base
          return { name, export: exp, structured, baseAllocation: structured && base, noZeroes }
        }
        break
      }
      case OPT.STRUCTURED_REPLY:
        if (length !== 0) { error(option, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data'); break }
        structured = true
        reply(option, REP.ACK)
        break
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT: {
        if (!structured) { error(option, REP.ERR_INVALID, 'negotiate structured replies first'); break }
        const name = data.string()
        const count = data.u32()
        const queries: string[] = []
        let valid = name != null && count != null
        for (let i = 0; valid && i < count!; i++) {
          const q = data.string()
          if (q == null) valid = false
          else queries.push(q)
        }
        if (!valid || data.left !== 0) { error(option, REP.ERR_INVALID, 'malformed meta context request'); break }
        if (await lookup(name!) == null) { error(option, REP.ERR_UNKNOWN, `no export named "${name}"`); break }
        const listing = option === OPT.LIST_META_CONTEXT
        const matches = (q: string): boolean => q === BASE_ALLOCATION || (listing && q === 'base:')
        const selected = listing && queries.length === 0 ? true : queries.some(matches)
        if (selected) {
          const context = Buffer.from(BASE_ALLOCATION)
          const out = Buffer.alloc(4 + context.length)
          out.writeUInt32BE(listing ? 0 : BASE_ALLOCATION_ID, 0)
          context.copy(out, 4)
          reply(option, REP.META_CONTEXT, out)
        }
        if (!listing) meta = { exportName: name!, base: selected }
        reply(option, REP.ACK)
        break
      }
      default:
        error(option, REP.ERR_UNSUP, `option ${option} is not supported`)
    }
  }
  throw new ProtocolViolation(`more than ${MAX_OPTIONS} options without choosing an export`)
}

function u16 (value: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(value, 0)
  return b
}
