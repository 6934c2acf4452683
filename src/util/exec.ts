import { execFile } from 'node:child_process'
import { CollectiveError, isSystemError } from '../errors.js'

export class ToolMissingError extends CollectiveError {
  static readonly code = 'ERR_TOOL_MISSING'
  override readonly name = 'ToolMissingError'
  constructor (tool: string, pkg: string) {
    super(`${tool} is not installed (apt-get install ${pkg})`, ToolMissingError.code)
  }
}

export interface ExecResult { stdout: string, stderr: string }

/** Runs a tool to completion; a missing binary becomes a ToolMissingError naming the Debian package. */
export async function run (tool: string, args: string[], pkg: string, options: { signal?: AbortSignal, maxBuffer?: number } = {}): Promise<ExecResult> {
  return await new Promise((resolve, reject) => {
    execFile(tool, args, { maxBuffer: options.maxBuffer ?? 64 * 1024 * 1024, signal: options.signal }, (err, stdout, stderr) => {
      if (err != null) {
        if (isSystemError(err, 'ENOENT')) reject(new ToolMissingError(tool, pkg))
        else reject(Object.assign(err, { stderr }))
        return
      }
      resolve({ stdout, stderr })
    })
  })
}
