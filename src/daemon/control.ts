import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { chmod, unlink } from 'node:fs/promises'
import { DaemonLostError, type CommandRunner, type DaemonHandle, type RunRequest } from './interface.js'
import { isSystemError } from '../errors.js'
import type { Output } from '../cli/progress.js'
import { logger } from '@libp2p/logger'

const log = logger('collective:daemon')

/**
 * The control API: HTTP/1.1 on a unix socket in the data dir (mode 0600: only the owner may drive
 * the daemon). `GET /status`, `GET /peers` answer JSON; `POST /run` runs one CLI invocation inside
 * the daemon and streams its output back as frames `u8 channel | u32be length | bytes` (channel 1
 * stdout, 2 stderr, 3 the exit code in ASCII, last). Closing the request aborts the command (Ctrl-C).
 */
export const Channel = { Stdout: 1, Stderr: 2, Exit: 3 } as const

/** A `POST /run` body larger than this is refused (argv and a path, nothing more). */
const MAX_REQUEST_BYTES = 1024 * 1024

function frame (channel: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + payload.length)
  out[0] = channel
  new DataView(out.buffer).setUint32(1, payload.length)
  out.set(payload, 5)
  return out
}

async function readBody (req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_REQUEST_BYTES) throw new Error(`request larger than ${MAX_REQUEST_BYTES} bytes`)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

function parseRunRequest (body: Buffer): RunRequest {
  const value = JSON.parse(body.toString('utf8'))
  if (value == null || !Array.isArray(value.argv) || !value.argv.every((a: unknown) => typeof a === 'string') || typeof value.cwd !== 'string') {
    throw new Error('expected {"argv": [string], "cwd": string}')
  }
  return { argv: value.argv, cwd: value.cwd, tty: value.tty }
}

/** An Output that sends one channel of a `/run` reply, with the response's backpressure. */
function channelOutput (res: ServerResponse, channel: number, tty?: boolean, columns?: number): Output {
  return {
    isTTY: tty === true,
    columns,
    write: chunk => res.writableEnded || res.destroyed ? true : res.write(frame(channel, typeof chunk === 'string' ? Buffer.from(chunk) : chunk)),
    once: (event, listener) => res.once(event, listener)
  }
}

export class ControlServer {
  private readonly server: Server
  private readonly path: string

  constructor (path: string, daemon: DaemonHandle, runCommand: CommandRunner, onError: (err: Error) => void) {
    this.path = path
    this.server = createServer((req, res) => {
      this.route(req, res, daemon, runCommand).catch(err => {
        onError(err as Error)
        if (!res.headersSent) {
          res.writeHead(400, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ error: (err as Error).message }))
        } else {
          res.destroy()
        }
      })
    })
  }

  private async route (req: IncomingMessage, res: ServerResponse, daemon: DaemonHandle, runCommand: CommandRunner): Promise<void> {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(await daemon.status()))
      return
    }
    if (req.method === 'GET' && req.url === '/peers') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(daemon.peers()))
      return
    }
    if (req.method === 'POST' && req.url === '/run') {
      const run = parseRunRequest(await readBody(req))
      log('control: %s', run.argv.filter(a => !a.startsWith('/')).join(' '))
      const controller = new AbortController()
      res.on('close', () => { if (!res.writableFinished) controller.abort() })
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const output = {
        stdout: channelOutput(res, Channel.Stdout, run.tty?.stdout, run.tty?.columns),
        stderr: channelOutput(res, Channel.Stderr, run.tty?.stderr, run.tty?.columns)
      }
      const code = await runCommand(run, output, controller.signal)
      res.end(frame(Channel.Exit, Buffer.from(String(code))))
      return
    }
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'not found' }))
  }

  async listen (): Promise<void> {
    await unlink(this.path).catch(() => {})
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      // Created owner-only: there is no window in which another user could connect.
      const umask = process.umask(0o177)
      try {
        this.server.listen(this.path, () => { this.server.off('error', reject); resolve() })
      } finally {
        process.umask(umask)
      }
    })
    await chmod(this.path, 0o600)
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    await unlink(this.path).catch(() => {})
  }
}

/** Whether a daemon answers on the socket (a stale socket file left by a killed daemon does not). */
export async function daemonAnswers (socketPath: string, timeoutMs = 2_000): Promise<boolean> {
  try {
    await controlGet(socketPath, '/status', timeoutMs)
    return true
  } catch {
    return false
  }
}

export async function controlGet (socketPath: string, path: string, timeoutMs = 30_000): Promise<any> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => {
        try {
          const value = JSON.parse(Buffer.concat(chunks).toString('utf8'))
          if (res.statusCode !== 200) reject(new DaemonLostError(`daemon answered ${res.statusCode}: ${value?.error}`))
          else resolve(value)
        } catch (err) {
          reject(new DaemonLostError(`daemon sent an unreadable reply (${(err as Error).message})`))
        }
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

/**
 * Runs a CLI invocation in the daemon, copying its output to ours; resolves to its exit code.
 * Aborting `signal` (Ctrl-C) closes the request, which aborts the command in the daemon.
 */
export async function runInDaemon (socketPath: string, run: RunRequest, output: { stdout: Output, stderr: Output }, signal?: AbortSignal): Promise<number> {
  return await new Promise((resolve, reject) => {
    const body = Buffer.from(JSON.stringify(run))
    const req = request({ socketPath, path: '/run', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, res => {
      if (res.statusCode !== 200) {
        res.resume()
        reject(new DaemonLostError(`daemon refused the command (HTTP ${res.statusCode})`))
        return
      }
      let buffered: Buffer = Buffer.alloc(0)
      let exit: number | undefined
      res.on('data', (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
        while (buffered.length >= 5) {
          const length = buffered.readUInt32BE(1)
          if (buffered.length < 5 + length) break
          const channel = buffered[0]
          const payload = buffered.subarray(5, 5 + length)
          buffered = buffered.subarray(5 + length)
          if (channel === Channel.Stdout) output.stdout.write(payload)
          else if (channel === Channel.Stderr) output.stderr.write(payload)
          else if (channel === Channel.Exit) exit = Number(payload.toString('ascii'))
        }
      })
      res.on('end', () => {
        if (exit == null || !Number.isInteger(exit)) reject(new DaemonLostError('the daemon stopped before the command finished'))
        else resolve(exit)
      })
      res.on('error', err => { reject(new DaemonLostError(`lost the daemon: ${err.message}`, { cause: err })) })
    })
    const onAbort = (): void => { req.destroy(); resolve(130) }
    signal?.addEventListener('abort', onAbort, { once: true })
    req.on('close', () => signal?.removeEventListener('abort', onAbort))
    req.on('error', err => {
      if (signal?.aborted === true) return
      reject(isSystemError(err) ? new DaemonLostError(`cannot reach the daemon: ${err.message}`, { cause: err }) : err)
    })
    req.end(body)
  })
}
