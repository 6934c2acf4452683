import type { NbdExport } from '../interface.js'

/**
 * The same export, telling `onRead` the range of every READ before serving it. A proxy, so whatever
 * else the export offers passes through untouched (methods bound to the export itself).
 */
export function observeReads (exp: NbdExport, onRead: (offset: number, length: number) => void): NbdExport {
  return new Proxy(exp, {
    get (target, prop) {
      if (prop === 'read') {
        return async (offset: number, length: number, options?: { signal?: AbortSignal }) => {
          onRead(offset, length)
          return await target.read(offset, length, options)
        }
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}
