import { Appliances, KeyStore, publishVersion } from '../../publish/index.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

function positive (text: unknown, flag: string): number | undefined {
  if (text == null) return undefined
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number`)
  return n
}

const command: Command = {
  usage: 'publish <appliance.json> [--key NAME]... [--version N] [--expires DAYS] [--threshold N] [--rotate-to NAME]... [--rotate-threshold N]',
  summary: 'Import an appliance\'s disks and boot files (reusing stored blocks), write and sign its manifest, pin it, and announce it (gossip + DHT) through the daemon.',
  help: `Options:
  --key NAME             signing key (repeatable; default "default"): a threshold of the appliance's keys
  --version N            default: the last published version + 1 (must be higher)
  --expires DAYS         hosts refuse the manifest after this (default 30)
  --threshold N          signatures required, when this publish founds a new appliance (default 1)
  --rotate-to NAME       hand the appliance over to these keys (repeatable): the old keys sign the rotation
  --rotate-threshold N   signatures the new keys require (default 1)
The appliance id is derived from the founding keys and the name: the same keys and name, the same id.
JSON result: {"id", "version", "root", "disks": [{"name", "root", "size"}], "bytesStored", "announced": {"gossipPeers", "dht"} | null}`,
  options: {
    key: { type: 'string', multiple: true },
    version: { type: 'string' },
    expires: { type: 'string' },
    threshold: { type: 'string' },
    'rotate-to': { type: 'string', multiple: true },
    'rotate-threshold': { type: 'string' }
  },
  positionals: 1,
  async run (ctx, [file], values) {
    const keyStore = new KeyStore(ctx.dataDir)
    const keys = await Promise.all(((values.key as string[] | undefined) ?? ['default']).map(async n => await keyStore.load(n)))
    const rotateTo = await Promise.all(((values['rotate-to'] as string[] | undefined) ?? []).map(async n => await keyStore.load(n)))
    const version = positive(values.version, '--version')
    if (version != null && !Number.isSafeInteger(version)) throw new UsageError('--version must be an integer')
    const store = await ctx.openStore()
    const appliances = ctx.daemon?.appliances ?? new Appliances(ctx.dataDir)
    const result = await publishVersion({
      store,
      appliances,
      file: ctx.path(file!),
      keys,
      version,
      threshold: positive(values.threshold, '--threshold'),
      expiresDays: positive(values.expires, '--expires'),
      rotateTo,
      rotateThreshold: positive(values['rotate-threshold'], '--rotate-threshold'),
      tmpDir: ctx.tmpDir,
      signal: ctx.signal,
      onProgress: e => { ctx.progress.update({ label: 'import', done: e.done, total: e.size }, e) }
    })
    const { manifest } = result
    const id = manifest.id.toString()
    let announced = null
    if (ctx.daemon != null) announced = await ctx.daemon.announcer.announce(id, result.envelope)
    else ctx.note('no daemon is running: the daemon announces this version when it starts')
    const disks = manifest.disks.map(d => ({ name: d.name, root: d.root.toString(), size: d.size }))
    ctx.note(`published ${manifest.name} v${manifest.version} (${result.bytesStored} new bytes stored)`)
    ctx.say(id)
    ctx.result({ id, version: manifest.version, root: disks.find((_, i) => manifest.disks[i]!.role === 'program')?.root ?? disks[0]!.root, disks, bytesStored: result.bytesStored, announced })
  }
}

export default command
