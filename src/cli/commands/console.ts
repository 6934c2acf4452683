import { connect, type Socket } from 'node:net'
import { stat } from 'node:fs/promises'
import { VmDir, VmNotFoundError, followFile } from '../../runtime/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'
import type { Context } from '../context.js'

/** Ctrl-] detaches, as in telnet and virsh. */
const DETACH = 0x1d

/** Sends the terminal's keys to the guest's serial port until Ctrl-]; resolves on detach. */
function attachInput (ctx: Context, path: string): { detached: Promise<void>, close: () => void } {
  const stdin = process.stdin
  let socket: Socket | undefined
  let resolve!: () => void
  const detached = new Promise<void>(r => { resolve = r })
  if (!stdin.isTTY) return { detached: new Promise(() => {}), close: () => {} }
  socket = connect(path)
  socket.on('error', err => { ctx.note(`console input unavailable: ${err.message}`) })
  socket.on('data', () => {}) // output comes from the log
  stdin.setRawMode(true)
  stdin.resume()
  const onData = (data: Buffer): void => {
    if (data.includes(DETACH)) { resolve(); return }
    socket?.write(data)
  }
  stdin.on('data', onData)
  const close = (): void => {
    stdin.off('data', onData)
    stdin.setRawMode(false)
    stdin.pause()
    socket?.destroy()
  }
  return { detached, close }
}

const command: Command = {
  usage: 'console <vm> [--no-follow] [--tail BYTES]',
  summary: "Show a VM's serial console: what it printed so far, then live output while it runs. On a terminal, keys go to the guest; Ctrl-] detaches.",
  help: `Options:
  --no-follow    print the log and return
  --tail BYTES   start this many bytes before the end of the log (default: the whole log)`,
  options: { 'no-follow': { type: 'boolean' }, tail: { type: 'string' } },
  positionals: 1,
  async run (ctx, [name], values) {
    const dir = new VmDir(ctx.dataDir, name!)
    if (!await dir.exists()) throw new VmNotFoundError(name!)
    const size = await stat(dir.console).then(s => s.size, () => -1)
    if (size < 0) return
    let from = 0
    if (values.tail != null) {
      const n = Number(values.tail)
      if (!Number.isInteger(n) || n < 0) throw new UsageError('--tail must be a number of bytes')
      from = Math.max(0, size - n)
    }
    const run = values['no-follow'] === true ? undefined : await dir.running()
    const write = async (bytes: Uint8Array): Promise<void> => { await ctx.write(bytes) }
    if (run == null) {
      await followFile(dir.console, from, write)
      return
    }
    // Until QEMU exits, the user detaches, or Ctrl-C.
    const input = attachInput(ctx, dir.consoleSocket)
    const controller = new AbortController()
    const exited = (async () => {
      while (!controller.signal.aborted && await dir.running() != null) await new Promise(resolve => setTimeout(resolve, 250))
    })()
    const stopFollowing = (): void => { controller.abort() }
    ctx.signal.addEventListener('abort', stopFollowing, { once: true })
    void input.detached.then(stopFollowing)
    try {
      await followFile(dir.console, from, write, { until: exited, signal: controller.signal })
    } finally {
      input.close()
      ctx.signal.removeEventListener('abort', stopFollowing)
    }
  }
}

export default command
