import { rename, rm, stat } from 'node:fs/promises'
import { run } from '../../util/exec.js'

/**
 * Creates the copy-on-write layer of a disk: a qcow2 file whose backing is the disk's NBD export.
 * `-u` with an explicit size: the server need not be up. The backing named in the file is only a
 * record: QEMU is given the export on its command line each run (the socket may move with the data
 * dir). Made under a temporary name and renamed, so a crash never leaves half a layer.
 */
export async function createLayer (qemuImg: string, path: string, backing: { uri: string, size: number }, options: { signal?: AbortSignal } = {}): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  await rm(tmp, { force: true })
  await run(qemuImg, ['create', '-q', '-f', 'qcow2', '-u', '-b', backing.uri, '-F', 'raw', tmp, String(backing.size)], 'qemu-utils', options)
  await rename(tmp, path)
}

export async function layerExists (path: string): Promise<boolean> {
  return await stat(path).then(s => s.isFile(), () => false)
}
