import { closeSync, constants, openSync, readSync, unlinkSync, write as writeCallback, writeSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Direct writes (O_DIRECT) for pack appends nobody reads back soon.
 *
 * A write through the page cache makes the kernel allocate a page and copy into it for every 4 KiB a
 * pull stores: on these VMs (whose freed memory goes back to the hypervisor, and is faulted in again
 * on its next use) 0.3 to 3 s of system time per GiB, measured with `dd`, against 0.1 s for the same
 * GiB written direct. A pull of a 1 GiB appliance is CPU-bound on its receiver, so that time is the
 * pull's; and the pages it fills push out what the running VMs had in the cache.
 *
 * Direct writes need aligned offsets, lengths and memory. Records are copied into one of two staging
 * buffers (aligned, allocated once per store) and written a whole unit at a time: a write ends on a
 * unit boundary, padded past the last record with bytes that mean nothing (the pack's bytes past its
 * committed length are garbage by design, cut on the next open), and the unit it ended in is staged
 * again, with the next records after it, for the next write. One buffer is written while records are
 * copied into the other; one write is in flight at a time (two would race for the unit they share).
 */

/** Offsets and lengths of direct writes are multiples of this (4Kn disks need it; 512 divides it). */
export const DIRECT_UNIT = 4096
/** Each of the two staging buffers: the most one direct write writes. */
export const STAGE_BYTES = 4 * 1024 * 1024

/**
 * Two staging buffers that direct writes under `dir` accept, or undefined where that file system
 * takes none (no O_DIRECT, as on some network file systems, or no alignment found). Node neither
 * aligns an allocation nor tells its address: a slightly larger buffer is allocated, and the first
 * offset into it from which a direct write of several pages succeeds is used (a misaligned one fails
 * with EINVAL; a write within one page can pass misaligned, hence the 16 units). Backing stores of
 * this size are never moved by V8, so the offset found stays aligned.
 */
export function stagingBuffers (dir: string, size = STAGE_BYTES): [Buffer, Buffer] | undefined {
  // Not on every platform (macOS has F_NOCACHE instead): there, plain writes.
  if (constants.O_DIRECT == null) return undefined
  // One process at a time writes a store (LevelDB's lock): one probe file name will do.
  const probe = join(dir, '.direct-probe')
  let fd: number
  try {
    fd = openSync(probe, constants.O_CREAT | constants.O_TRUNC | constants.O_WRONLY | constants.O_DIRECT, 0o600)
  } catch {
    return undefined
  }
  try {
    const first = alignedPart(fd, size)
    const second = first == null ? undefined : alignedPart(fd, size)
    return first == null || second == null ? undefined : [first, second]
  } finally {
    closeSync(fd)
    try { unlinkSync(probe) } catch {}
  }
}

function alignedPart (fd: number, size: number): Buffer | undefined {
  const raw = Buffer.allocUnsafeSlow(size + DIRECT_UNIT)
  const length = Math.min(size, 16 * DIRECT_UNIT)
  for (let at = 0; at < DIRECT_UNIT; at += 8) {
    try {
      writeSync(fd, raw, at, length, 0)
      return raw.subarray(at, at + size)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return undefined
    }
  }
  return undefined
}

interface Waiter {
  /** Where the bytes of its write end in the file. */
  end: number
  resolve: () => void
  reject: (err: Error) => void
}

/** Appends to one pack with direct writes (see above). Writes follow each other: each starts where the last ended. */
export class DirectWrites {
  /**
   * False once the file refused a direct write after all (EINVAL): from then on the same pipeline
   * writes through `plainFd`, exact lengths, no padding.
   */
  direct = true
  private readonly fd: number
  private readonly plainFd: number
  private readonly buffers: [Buffer, Buffer]
  private cur = 0
  /** The file offset of the current buffer's first byte (a unit boundary), and the bytes staged in it. */
  private base = 0
  private used = 0
  /** Where the bytes handed to `write` end, and where those that landed end. */
  private end = 0
  private landed = 0
  /** False until the unit the next write starts in is read back from the file (first use, after a failure). */
  private loaded = false
  private inflight = false
  /** Pieces handed to `write` not yet copied into a buffer (the current one was full). */
  private pending: Uint8Array[] = []
  private pendingIndex = 0
  private pendingAt = 0
  private waiters: Waiter[] = []

  /** `path` is opened for direct writes; `plainFd` is the pack's ordinary descriptor (reads of the first unit, fallback writes). */
  constructor (path: string, plainFd: number, buffers: [Buffer, Buffer]) {
    this.fd = openSync(path, constants.O_WRONLY | constants.O_DIRECT)
    this.plainFd = plainFd
    this.buffers = buffers
  }

  /** Whether a write is in flight or waiting (the buffers are busy). */
  get busy (): boolean { return this.inflight || this.waiters.length > 0 }

  /**
   * Writes `pieces` at `position` (where the last write ended, or anywhere when idle). Resolves once
   * they landed. The pieces are this writer's from the call on: `pieces` is emptied, so a caller
   * awaiting the write holds none of them, and each is let go as soon as it is copied into a
   * staging buffer (a pull's blocks kept until their write landed lived long enough to be promoted
   * to V8's old space: work for every scavenge and for every full GC after).
   */
  async write (pieces: Uint8Array[], position: number): Promise<void> {
    if (!this.loaded || (!this.busy && position !== this.end)) this.load(position)
    else if (position !== this.end) throw new Error(`direct write at ${position}, not where the last one ended (${this.end})`)
    for (const piece of pieces) {
      if (piece.length === 0) continue
      this.pending.push(piece)
      this.end += piece.length
    }
    pieces.length = 0
    const landed = new Promise<void>((resolve, reject) => { this.waiters.push({ end: this.end, resolve, reject }) })
    this.stage()
    this.issue()
    await landed
  }

  /** Forgets what it knew of the file (after a failed write was cut back): the next write reads its first unit again. */
  reset (): void {
    if (this.busy) throw new Error('DirectWrites.reset while writing')
    this.loaded = false
  }

  close (): void {
    closeSync(this.fd)
  }

  /** Starts at `position`: the bytes of its unit before it are read from the file (the next write rewrites that unit). */
  private load (position: number): void {
    if (this.busy) throw new Error('DirectWrites.load while writing')
    this.cur = 0
    this.base = position - position % DIRECT_UNIT
    this.used = position - this.base
    for (let done = 0; done < this.used;) {
      const n = readSync(this.plainFd, this.buffers[0], done, this.used - done, this.base + done)
      if (n === 0) throw Object.assign(new Error(`pack shorter than ${position} bytes`), { code: 'EIO' })
      done += n
    }
    this.end = position
    this.landed = position
    this.loaded = true
  }

  /** Copies pending pieces into the current buffer, as many as fit. */
  private stage (): void {
    const buf = this.buffers[this.cur]!
    while (this.pendingIndex < this.pending.length && this.used < buf.length) {
      const piece = this.pending[this.pendingIndex]!
      const n = Math.min(piece.length - this.pendingAt, buf.length - this.used)
      buf.set(n === piece.length ? piece : piece.subarray(this.pendingAt, this.pendingAt + n), this.used)
      this.used += n
      this.pendingAt += n
      if (this.pendingAt === piece.length) {
        this.pending[this.pendingIndex++] = EMPTY
        this.pendingAt = 0
      }
    }
    if (this.pendingIndex === this.pending.length) {
      this.pending = []
      this.pendingIndex = 0
    }
  }

  /** Writes the current buffer if nothing is in flight and it holds bytes not yet written; the next buffer starts with its last unit. */
  private issue (): void {
    const start = this.base
    const end = this.base + this.used
    if (this.inflight || end <= this.landed) return
    const buf = this.buffers[this.cur]!
    const length = this.direct ? Math.ceil(this.used / DIRECT_UNIT) * DIRECT_UNIT : this.used
    const keep = this.used - this.used % DIRECT_UNIT
    buf.copy(this.buffers[1 - this.cur]!, 0, keep, this.used)
    this.cur = 1 - this.cur
    this.base += keep
    this.used -= keep
    this.inflight = true
    this.send(buf, 0, length, start, end)
  }

  /** Writes buf[at, length) at start + at; `end` is where the real bytes in it end. */
  private send (buf: Buffer, at: number, length: number, start: number, end: number): void {
    // Every real byte written (a short direct write may leave only padding): landed.
    if (at >= length) {
      this.done(end)
      return
    }
    writeCallback(this.direct ? this.fd : this.plainFd, buf, at, length - at, start + at, (err, written) => {
      if (err != null) {
        if (err.code === 'EINVAL' && this.direct) {
          this.direct = false
          this.send(buf, at, end - start, start, end)
        } else {
          this.fail(err)
        }
        return
      }
      if (written === 0) {
        this.fail(Object.assign(new Error('a pack write wrote nothing'), { code: 'EIO' }))
        return
      }
      // Short (a full disk on the way, a signal): the rest, which fails if the disk is full.
      this.send(buf, at + written, length, start, end)
    })
  }

  /** The write in flight landed, up to `end`: its waiters resolve, and the next buffer goes. */
  private done (end: number): void {
    this.inflight = false
    this.landed = end
    let settled = 0
    while (settled < this.waiters.length && this.waiters[settled]!.end <= end) this.waiters[settled++]!.resolve()
    if (settled > 0) this.waiters = this.waiters.slice(settled)
    this.stage()
    this.issue()
  }

  /** A write failed: every write not landed fails with it, and the file's tail is read again before the next. */
  private fail (err: Error): void {
    this.inflight = false
    this.loaded = false
    this.pending = []
    this.pendingIndex = 0
    this.pendingAt = 0
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w.reject(err)
  }
}

const EMPTY = new Uint8Array(0)
