import { createServer, type Server, type Socket } from 'node:net'
import { chmod, unlink } from 'node:fs/promises'
import { negotiate } from './negotiate.js'
import { Transmission } from './transmission.js'
import { ConnectionClosedError, SocketReader } from './socket-reader.js'
import { ProtocolViolation } from './violation.js'
import { fromSystemError } from '../../errors.js'
import type { NbdEvent, NbdServerInit } from '../interface.js'

/** @default 32 MiB: QEMU sends at most 32 MiB per request; nbdcopy 256 KiB. */
export const MAX_REQUEST = 32 * 1024 * 1024
export const MAX_INFLIGHT = 16
/** How long a client may take to finish the handshake before it is dropped (ms). */
const HANDSHAKE_TIMEOUT = 30_000

/**
 * An NBD server on a unix socket (mode 0600): fixed newstyle handshake, then the transmission phase
 * of docs/protocol.md. A client that breaks the protocol loses its connection; nothing it sends can
 * stop the server or other clients.
 */
export class NbdServer {
  readonly path: string
  private readonly init: NbdServerInit
  private readonly server: Server
  private readonly connections = new Map<number, { socket: Socket, controller: AbortController, done: Promise<void> }>()
  private nextId = 1
  private closed = false

  constructor (init: NbdServerInit) {
    this.init = init
    this.path = init.path
    this.server = createServer({ allowHalfOpen: false }, socket => { this.accept(socket) })
  }

  private emit (event: NbdEvent): void {
    try { this.init.onEvent?.(event) } catch {}
  }

  async listen (): Promise<void> {
    await unlink(this.path).catch(() => {})
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { reject(fromSystemError(err, this.path)) }
      this.server.once('error', onError)
      // Created owner-only: no other user ever gets a window to connect.
      const umask = process.umask(0o177)
      try {
        this.server.listen(this.path, () => { this.server.off('error', onError); resolve() })
      } finally {
        process.umask(umask)
      }
    })
    await chmod(this.path, 0o600)
    this.server.on('error', () => {})
  }

  /** Connections open now. */
  get clients (): number { return this.connections.size }

  private accept (socket: Socket): void {
    if (this.closed) { socket.destroy(); return }
    const id = this.nextId++
    const controller = new AbortController()
    const done = this.serve(id, socket, controller.signal).finally(() => {
      controller.abort()
      this.connections.delete(id)
      socket.destroy()
    })
    this.connections.set(id, { socket, controller, done })
  }

  private async serve (id: number, socket: Socket, signal: AbortSignal): Promise<void> {
    const maxRequest = this.init.maxRequest ?? MAX_REQUEST
    socket.setNoDelay?.(true)
    socket.on('error', () => {})
    socket.once('close', () => { /* reader sees it */ })
    const reader = new SocketReader(socket, maxRequest + 1024 * 1024)
    this.emit({ type: 'nbd:connect', id })
    let reason = 'closed'
    const timer = setTimeout(() => { socket.destroy() }, HANDSHAKE_TIMEOUT)
    try {
      const session = await negotiate(socket, reader, {
        resolve: this.init.resolve,
        list: this.init.list,
        defaultExport: this.init.defaultExport,
        maxRequest,
        signal
      })
      clearTimeout(timer)
      if (session == null) {
        reason = 'client aborted the negotiation'
        socket.end()
        return
      }
      this.emit({ type: 'nbd:export', id, name: session.name, size: session.export.size })
      const transmission = new Transmission(socket, reader, session, {
        id,
        maxRequest,
        maxInflight: this.init.maxInflight ?? MAX_INFLIGHT,
        signal,
        onEvent: event => { this.emit(event) }
      })
      reason = await transmission.run()
      socket.end()
    } catch (err) {
      if (err instanceof ProtocolViolation) {
        reason = `protocol violation: ${err.message}`
        this.emit({ type: 'nbd:violation', id, reason: err.message })
      } else if (err instanceof ConnectionClosedError) {
        reason = err.message
      } else {
        reason = `internal error: ${(err as Error)?.message ?? String(err)}`
      }
    } finally {
      clearTimeout(timer)
      this.emit({ type: 'nbd:disconnect', id, reason })
    }
  }

  /** Stops listening, drops every connection and removes the socket. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const done = [...this.connections.values()].map(c => { c.controller.abort(); c.socket.destroy(); return c.done })
    await new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    await Promise.allSettled(done)
    await unlink(this.path).catch(() => {})
  }
}
