import { ImageWindow } from './window.js'
import { isZero } from './zero.js'
import { throwIfAborted } from '../../util/abort.js'
import type { Chunk, ChunkerOptions, ChunkerParams } from './interface.js'
import type { ImageSource } from '../source/interface.js'

/**
 * Fixed-size chunks aligned to the image: chunk i covers [i*size, (i+1)*size). An all-zero chunk is a
 * hole. The naive baseline: any in-place change costs a whole chunk, but nothing ever shifts.
 */
export async function * fixedChunker (source: ImageSource, params: ChunkerParams, options: ChunkerOptions = {}): AsyncGenerator<Chunk> {
  const { size } = params
  const window = new ImageWindow(source, size)
  for (let offset = 0; offset < source.size; offset += size) {
    throwIfAborted(options.signal)
    const length = Math.min(size, source.size - offset)
    const { buf, index } = await window.at(offset, length)
    const bytes = buf.subarray(index, index + length)
    yield isZero(bytes, 0, length) ? { offset, length } : { offset, length, bytes }
    options.onScan?.(offset + length)
  }
}
