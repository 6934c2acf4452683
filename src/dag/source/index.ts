import { open, stat } from 'node:fs/promises'
import { RawSource } from './raw.js'
import { MappedSource } from './qemu.js'
import { fromSystemError, InvalidImageError, FileAccessError, UnsupportedFormatError } from '../../errors.js'
import type { ImageSource } from './interface.js'

export type { ImageSource } from './interface.js'

/** Recognises a disk image format from its first bytes. */
export function detectFormat (head: Uint8Array): string {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength)
  const ascii = (start: number, text: string): boolean => b.subarray(start, start + text.length).toString('latin1') === text
  if (ascii(0, 'QFI\xfb')) return 'qcow2'
  if (ascii(0, 'KDMV') || ascii(0, '# Disk DescriptorFile')) return 'vmdk'
  if (b.length >= 0x44 && b.readUInt32LE(0x40) === 0xbeda107f) return 'vdi'
  if (ascii(0, 'vhdxfile')) return 'vhdx'
  if (ascii(0, 'conectix')) return 'vpc'
  if (ascii(0, 'QEVM')) return 'unsupported:qed'
  if (b[0] === 0x1f && b[1] === 0x8b) return 'unsupported:gzip'
  if (ascii(0, '\xfd7zXZ\0')) return 'unsupported:xz'
  if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'unsupported:zstd'
  if (ascii(0, 'BZh')) return 'unsupported:bzip2'
  return 'raw'
}

export interface OpenImageOptions {
  /** Force a format instead of detecting it. */
  format?: string
  /** Where a temporary raw conversion may be written when an image cannot be read in place. */
  tmpDir: string
}

/** Opens a disk image for import, detecting its format; every bad input becomes a typed error. */
export async function openImage (path: string, options: OpenImageOptions): Promise<ImageSource> {
  let st
  try {
    st = await stat(path)
  } catch (err) {
    throw fromSystemError(err, path)
  }
  if (st.isDirectory()) throw new FileAccessError(`${path}: is a directory, not a disk image`)
  if (!st.isFile()) throw new FileAccessError(`${path}: not a regular file`)
  let head: Uint8Array
  try {
    const fd = await open(path, 'r')
    try {
      head = new Uint8Array(512)
      const { bytesRead } = await fd.read(head, 0, 512, 0)
      head = head.subarray(0, bytesRead)
    } finally {
      await fd.close()
    }
  } catch (err) {
    throw fromSystemError(err, path)
  }
  if (head.length === 0) throw new InvalidImageError(`${path}: empty file (0 bytes), not a disk image`)
  const format = options.format ?? detectFormat(head)
  if (format.startsWith('unsupported:')) {
    throw new UnsupportedFormatError(`${path}: ${format.slice(12)} data is not a disk image format (decompress it first)`)
  }
  if (format === 'raw') return await RawSource.open(path)
  if (!['qcow2', 'vmdk', 'vdi', 'vhdx', 'vpc'].includes(format)) {
    throw new UnsupportedFormatError(`${path}: unknown image format "${format}" (raw, qcow2, vmdk, vdi, vhdx, vpc)`)
  }
  return await MappedSource.open(path, format, options.tmpDir)
}
