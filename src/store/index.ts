import { join } from 'node:path'
import { Blockstore } from './blockstore.js'
import { Pins } from './pins.js'

export { Blockstore } from './blockstore.js'
export { Pins, checkPinName } from './pins.js'
export { collectGarbage, liveSet } from './gc.js'
export { fsck, firstMissing } from './fsck.js'
export type * from './interface.js'

/** The store of one data dir: blocks (packs + LevelDB index) and pins. */
export interface Store {
  readonly dir: string
  readonly blocks: Blockstore
  readonly pins: Pins
  close(): Promise<void>
}

export async function openStore (dataDir: string): Promise<Store> {
  const dir = join(dataDir, 'store')
  const blocks = await Blockstore.open(dir)
  return {
    dir,
    blocks,
    pins: new Pins(blocks),
    close: async () => { await blocks.close() }
  }
}
