import { access, constants } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { ToolMissingError } from '../../util/exec.js'

export const QEMU_SYSTEM = 'qemu-system-x86_64'
export const QEMU_IMG = 'qemu-img'

/** The absolute path of an executable on PATH, or a ToolMissingError naming its Debian package. */
export async function findTool (tool: string, pkg: string): Promise<string> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const path = join(dir, tool)
    try {
      await access(path, constants.X_OK)
      return path
    } catch {}
  }
  throw new ToolMissingError(tool, pkg)
}

export async function findQemu (): Promise<{ system: string, img: string }> {
  return { system: await findTool(QEMU_SYSTEM, 'qemu-system-x86'), img: await findTool(QEMU_IMG, 'qemu-utils') }
}
