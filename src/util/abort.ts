import { AbortError } from '../errors.js'

export function throwIfAborted (signal?: AbortSignal): void {
  if (signal?.aborted === true) throw new AbortError()
}
