import { rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { exportImage, type BlockGetter } from '../dag/index.js'
import { parseCid } from '../dag/hash.js'

/**
 * Writes a content-addressed blob (a kernel, an initrd: imported files) to `<dir>/<cid>` for QEMU's
 * `-kernel`/`-initrd`. The name is the content, so an existing file is reused as is.
 */
export async function exportBootFile (blocks: BlockGetter, cid: string, dir: string, options: { signal?: AbortSignal } = {}): Promise<string> {
  const path = join(dir, cid)
  if (await stat(path).then(s => s.isFile(), () => false)) return path
  const tmp = `${path}.tmp-${process.pid}`
  try {
    await exportImage(blocks, parseCid(cid), tmp, { signal: options.signal })
    await rename(tmp, path)
  } finally {
    await rm(tmp, { force: true })
  }
  return path
}
