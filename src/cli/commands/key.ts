import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { KeyStore } from '../../publish/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'key create --name NAME | key list | key export NAME',
  summary: 'Publisher keys (ed25519), kept owner-only in <data-dir>/keys. `export` prints the public key and its fingerprint for hosts to pin (subscribe --key).',
  help: 'JSON: create/export → {"name", "fingerprint", "publicKey" (base64, libp2p protobuf)}; list → one such line per key, then {"keys": N}',
  options: { name: { type: 'string' } },
  positionals: [1, 2],
  async run (ctx, [verb, arg], values) {
    const keys = new KeyStore(ctx.dataDir)
    if (verb === 'create') {
      const name = values.name as string | undefined ?? arg
      if (name == null) throw new UsageError('usage: collective-peer key create --name NAME')
      const info = await keys.create(name)
      const key = await keys.load(name)
      ctx.say(`created key "${info.name}": ${info.fingerprint}`)
      ctx.result({ ...info, publicKey: Buffer.from(publicKeyToProtobuf(key.publicKey)).toString('base64') })
      return
    }
    if (verb === 'list') {
      const list = await keys.list()
      for (const k of list) { ctx.say(`${k.name}  ${k.fingerprint}`); ctx.emit(k) }
      ctx.result({ keys: list.length })
      return
    }
    if (verb === 'export') {
      if (arg == null) throw new UsageError('usage: collective-peer key export NAME')
      const key = await keys.load(arg)
      const publicKey = Buffer.from(publicKeyToProtobuf(key.publicKey)).toString('base64')
      const { fingerprint } = (await keys.list()).find(k => k.name === arg)!
      ctx.say(`${fingerprint} ${publicKey}`)
      ctx.result({ name: arg, fingerprint, publicKey })
      return
    }
    throw new UsageError(`unknown key action "${verb}" (create, list or export)`)
  }
}

export default command
