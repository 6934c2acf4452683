import { open, type FileHandle } from 'node:fs/promises'
import type { NbdExport, NbdExtent } from '../interface.js'

/**
 * A raw image file served read-write (or read-only). Not used for publisher disks (those are DAGs in
 * the store); it serves scratch disks and lets tests drive every write command with real clients.
 * A write with FUA, and every FLUSH, returns once the data is on disk (fdatasync).
 */
export class FileExport implements NbdExport {
  readonly readOnly: boolean
  readonly multiConn = true
  readonly size: number
  private readonly fd: FileHandle

  private constructor (fd: FileHandle, size: number, readOnly: boolean) {
    this.fd = fd
    this.size = size
    this.readOnly = readOnly
  }

  static async open (path: string, options: { readOnly?: boolean } = {}): Promise<FileExport> {
    const readOnly = options.readOnly === true
    const fd = await open(path, readOnly ? 'r' : 'r+')
    const { size } = await fd.stat()
    return new FileExport(fd, size, readOnly)
  }

  async read (offset: number, length: number, options: { into?: Uint8Array } = {}): Promise<Uint8Array> {
    const out = options.into?.length === length ? options.into : Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const { bytesRead } = await this.fd.read(out, done, length - done, offset + done)
      if (bytesRead === 0) { out.fill(0, done); break }
      done += bytesRead
    }
    return out
  }

  async extents (_offset: number, length: number): Promise<NbdExtent[]> {
    return [{ length, zero: false }]
  }

  async write (offset: number, bytes: Uint8Array, options: { fua: boolean }): Promise<void> {
    if (this.readOnly) throw new Error('read-only')
    let done = 0
    while (done < bytes.length) {
      const { bytesWritten } = await this.fd.write(bytes, done, bytes.length - done, offset + done)
      done += bytesWritten
    }
    if (options.fua) await this.fd.datasync()
  }

  async trim (): Promise<void> {}

  async flush (): Promise<void> {
    if (!this.readOnly) await this.fd.datasync()
  }

  async close (): Promise<void> {
    await this.fd.close()
  }
}
