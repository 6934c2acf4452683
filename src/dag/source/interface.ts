/**
 * A disk image opened for import: a byte array of `size` bytes, readable at any position. Raw files
 * read straight from disk; other formats (qcow2, vmdk, vdi) map guest offsets to host file offsets
 * through `qemu-img map`.
 */
export interface ImageSource {
  readonly size: number
  /** Format detected from the file's header (`raw`, `qcow2`, ...). */
  readonly format: string
  /**
   * Fills `buffer[0..length)` with the image's bytes at `position`; zeros past the end. Must fill the
   * whole length (short reads are retried inside).
   */
  read(buffer: Uint8Array, length: number, position: number): Promise<void>
  close(): Promise<void>
}
