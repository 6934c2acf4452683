import { connect, type Socket } from 'node:net'
import { createInterface } from 'node:readline'

/** A QMP error reply, or a lost connection. */
export class QmpError extends Error {
  override readonly name = 'QmpError'
}

/**
 * A QEMU Machine Protocol client on a unix socket: newline-delimited JSON, one command at a time
 * (`execute`), events to `onEvent`. Connects, reads the greeting and enters command mode.
 */
export class Qmp {
  private readonly socket: Socket
  private pending?: { resolve: (value: any) => void, reject: (err: Error) => void }
  private readonly queue: Array<() => void> = []
  private busy = false
  private closed = false
  onEvent?: (event: { event: string, data?: any }) => void

  private constructor (socket: Socket) {
    this.socket = socket
    // readline re-emits the socket's errors: swallowed here, seen through 'close'.
    createInterface({ input: socket }).on('line', line => { this.line(line) }).on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.pending?.reject(new QmpError('QMP connection closed'))
      this.pending = undefined
    })
    socket.on('error', () => {})
  }

  static async connect (path: string, options: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<Qmp> {
    const socket = connect(path)
    const qmp = new Qmp(socket)
    const timeout = options.timeoutMs ?? 5_000
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new QmpError(`no QMP greeting within ${timeout} ms`)) }, timeout)
      socket.once('error', err => { clearTimeout(timer); reject(new QmpError(`cannot connect to QMP: ${err.message}`)) })
      qmp.pending = { resolve: () => { clearTimeout(timer); resolve() }, reject: err => { clearTimeout(timer); reject(err) } }
    })
    try {
      await greeting
      await qmp.execute('qmp_capabilities')
    } catch (err) {
      socket.destroy()
      throw err
    }
    return qmp
  }

  private line (line: string): void {
    let message: any
    try { message = JSON.parse(line) } catch { return }
    if (message.QMP != null || message.return !== undefined || message.error != null) {
      const pending = this.pending
      this.pending = undefined
      if (message.error != null) pending?.reject(new QmpError(`${message.error.class}: ${message.error.desc}`))
      else pending?.resolve(message.return ?? message.QMP)
      return
    }
    if (message.event != null) this.onEvent?.(message)
  }

  async execute (command: string, args?: Record<string, unknown>): Promise<any> {
    while (this.busy) await new Promise<void>(resolve => this.queue.push(resolve))
    this.busy = true
    try {
      if (this.closed) throw new QmpError('QMP connection closed')
      return await new Promise((resolve, reject) => {
        this.pending = { resolve, reject }
        this.socket.write(JSON.stringify(args != null ? { execute: command, arguments: args } : { execute: command }) + '\n')
      })
    } finally {
      this.busy = false
      this.queue.shift()?.()
    }
  }

  close (): void {
    this.socket.destroy()
  }
}
