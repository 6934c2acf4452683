import { open, mkdtemp, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { readFully, RawSource } from './raw.js'
import { run } from '../../util/exec.js'
import { InvalidImageError } from '../../errors.js'
import type { ImageSource } from './interface.js'

/** One extent of `qemu-img map --output=json`. */
interface MapExtent {
  start: number
  length: number
  depth: number
  present: boolean
  zero: boolean
  data: boolean
  offset?: number
}

async function qemuImg (args: string[], what: string): Promise<string> {
  try {
    return (await run('qemu-img', args, 'qemu-utils')).stdout
  } catch (err: any) {
    if (err?.code === 'ERR_TOOL_MISSING') throw err
    const detail = String(err?.stderr ?? err?.message ?? '').trim().split('\n').pop()
    throw new InvalidImageError(`${what}: qemu-img cannot read it (${detail})`)
  }
}

/**
 * A qcow2/vmdk/vdi/vhdx image read in place: `qemu-img map` says where each guest extent lives in the
 * host file, so guest bytes are read straight from there and no raw copy is made. Images whose data
 * is not stored verbatim (compressed clusters, encryption, a backing chain) fall back to a sparse raw
 * conversion in a temporary folder, deleted on close.
 */
export class MappedSource implements ImageSource {
  readonly format: string
  readonly size: number
  private readonly fd: FileHandle
  private readonly extents: MapExtent[]

  private constructor (format: string, size: number, fd: FileHandle, extents: MapExtent[]) {
    this.format = format
    this.size = size
    this.fd = fd
    this.extents = extents
  }

  static async open (path: string, format: string, tmpDir: string): Promise<ImageSource> {
    const info = JSON.parse(await qemuImg(['info', '--output=json', '-f', format, path], path))
    const size = Number(info['virtual-size'])
    if (!Number.isSafeInteger(size) || size <= 0) throw new InvalidImageError(`${path}: ${format} image has no size`)
    const extents: MapExtent[] = JSON.parse(await qemuImg(['map', '--output=json', '-f', format, path], path))
    // qemu reads clusters past the end of a truncated file as zeros: that would import another disk.
    const fileSize = (await stat(path)).size
    const cut = extents.find(e => e.data && e.depth === 0 && e.offset != null && e.offset + e.length > fileSize)
    if (cut != null) {
      throw new InvalidImageError(`${path}: truncated ${format} image (guest bytes ${cut.start}..${cut.start + cut.length} lie past the end of the file)`)
    }
    const direct = info['backing-filename'] == null && info.encrypted !== true &&
      extents.every(e => !e.data || (e.offset != null && e.depth === 0))
    if (direct) {
      return new MappedSource(format, size, await open(path, 'r'), extents)
    }
    const dir = await mkdtemp(join(tmpDir, 'convert-'))
    const rawPath = join(dir, 'image.raw')
    try {
      await qemuImg(['convert', '-f', format, '-O', 'raw', '-S', '4k', path, rawPath], path)
      const source = await RawSource.open(rawPath, size)
      return {
        format,
        size,
        read: source.read.bind(source),
        close: async () => { await source.close(); await rm(dir, { recursive: true, force: true }) }
      }
    } catch (err) {
      await rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  async read (buffer: Uint8Array, length: number, position: number): Promise<void> {
    let done = 0
    let i = this.findExtent(position)
    while (done < length) {
      const pos = position + done
      const e = this.extents[i]
      if (e == null || pos >= this.size) {
        buffer.fill(0, done, length)
        return
      }
      const n = Math.min(length - done, e.start + e.length - pos)
      if (e.data && e.offset != null) {
        await readFully(this.fd, buffer.subarray(done), n, e.offset + (pos - e.start))
      } else {
        buffer.fill(0, done, done + n)
      }
      done += n
      i++
    }
  }

  private findExtent (position: number): number {
    let lo = 0
    let hi = this.extents.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.extents[mid]!.start <= position) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  async close (): Promise<void> {
    await this.fd.close()
  }
}
