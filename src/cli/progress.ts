import type { PullProgressEvent } from '../net/interface.js'
/** Where output goes: the process's streams, or a daemon's reply to a forwarded command. */
export interface Output {
  write(chunk: string | Uint8Array): boolean
  isTTY?: boolean
  columns?: number
  once?(event: 'drain', listener: () => void): unknown
}

export interface ProgressState {
  label: string
  done: number
  total: number
  /** Extra text after the figures (peers, etc.). */
  extra?: string
}

function mib (n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`
}

/**
 * Draws one progress line on a TTY (bytes, rate, ETA), or NDJSON progress events with --json
 * (at most four a second), or nothing when stderr is not a terminal.
 */
export class ProgressRenderer {
  private readonly json: boolean
  private readonly stream: Output
  private readonly out: Output
  private readonly started = Date.now()
  private lastDraw = 0
  private drawn = false

  constructor (options: { json: boolean, stream: Output, out: Output }) {
    this.json = options.json
    this.stream = options.stream
    this.out = options.out
  }

  update (state: ProgressState, event?: Record<string, unknown>): void {
    const now = Date.now()
    if (now - this.lastDraw < 250 && state.done < state.total) return
    this.lastDraw = now
    if (this.json) {
      if (event != null) this.out.write(JSON.stringify(event) + '\n')
      return
    }
    if (this.stream.isTTY !== true) return
    const seconds = Math.max((now - this.started) / 1000, 0.001)
    const rate = state.done / seconds
    const share = state.total > 0 ? state.done / state.total : 1
    const eta = rate > 0 && state.total > state.done ? `${Math.ceil((state.total - state.done) / rate)}s` : '-'
    const width = Math.max(10, Math.min(40, (this.stream.columns ?? 80) - 60))
    const fill = Math.round(share * width)
    const bar = '#'.repeat(fill) + '.'.repeat(width - fill)
    const line = `${state.label} [${bar}] ${(share * 100).toFixed(0).padStart(3)}% ${mib(state.done)}/${mib(state.total)} ${mib(rate)}/s ETA ${eta}${state.extra != null ? ' ' + state.extra : ''}`
    this.stream.write(`\r\x1b[K${line}`)
    this.drawn = true
  }

  clear (): void {
    if (this.drawn) {
      this.stream.write('\r\x1b[K')
      this.drawn = false
    }
  }

  done (): void {
    this.clear()
  }
}

/** Renders a pull's progress events (bar on a TTY, NDJSON with --json). */
export function pullProgress (ctx: { progress: ProgressRenderer, emit(object: unknown): void }): (event: PullProgressEvent) => void {
  return event => {
    if (event.type === 'pull:progress') {
      ctx.progress.update({ label: 'pull', done: event.bytesFetched, total: event.bytesTotal, extra: `${event.peers} peers` }, event)
    } else {
      ctx.emit(event)
    }
  }
}
