import { open, type FileHandle } from 'node:fs/promises'
import type { ImageSource } from './interface.js'

/** Reads `length` bytes at `position` from `fd` into `buffer`, zero-filling past the end of file. */
export async function readFully (fd: FileHandle, buffer: Uint8Array, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await fd.read(buffer, done, length - done, position + done)
    if (bytesRead === 0) {
      buffer.fill(0, done, length)
      return
    }
    done += bytesRead
  }
}

/** A raw image: the file's bytes are the disk's bytes. */
export class RawSource implements ImageSource {
  readonly format = 'raw'
  readonly size: number
  private readonly fd: FileHandle

  private constructor (fd: FileHandle, size: number) {
    this.fd = fd
    this.size = size
  }

  static async open (path: string, size?: number): Promise<RawSource> {
    const fd = await open(path, 'r')
    try {
      return new RawSource(fd, size ?? (await fd.stat()).size)
    } catch (err) {
      await fd.close()
      throw err
    }
  }

  async read (buffer: Uint8Array, length: number, position: number): Promise<void> {
    await readFully(this.fd, buffer, length, position)
  }

  async close (): Promise<void> {
    await this.fd.close()
  }
}
