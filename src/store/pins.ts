import { PIN, range, textKey } from './keys.js'
import { NotFoundError, UsageError } from '../errors.js'
import type { Blockstore } from './blockstore.js'
import type { Pin } from './interface.js'

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$/

export function checkPinName (name: string): string {
  if (!NAME.test(name)) throw new UsageError(`invalid name "${name}": use letters, digits and . _ @ : + - (at most 128)`)
  return name
}

/** Named roots. A pin is written (synced) only after every block of its DAG is committed. */
export class Pins {
  private readonly store: Blockstore

  constructor (store: Blockstore) {
    this.store = store
  }

  async set (pin: Pin): Promise<void> {
    checkPinName(pin.name)
    await this.store.db.put(textKey(PIN, pin.name), Buffer.from(JSON.stringify(pin)), { sync: true })
  }

  async get (name: string): Promise<Pin | undefined> {
    const value = await this.store.db.get(textKey(PIN, name))
    return value == null ? undefined : JSON.parse(Buffer.from(value).toString('utf8')) as Pin
  }

  async remove (name: string): Promise<void> {
    if (await this.get(name) == null) throw new NotFoundError(`no pin named "${name}"`)
    await this.store.db.del(textKey(PIN, name), { sync: true })
  }

  async list (): Promise<Pin[]> {
    const pins: Pin[] = []
    for await (const value of this.store.db.values(range(PIN))) {
      pins.push(JSON.parse(Buffer.from(value).toString('utf8')) as Pin)
    }
    return pins
  }
}
