import { Appliances, KeyStore, parsePublicKey, publishVersion, writeManifestFile } from '../../publish/index.js'
import { UsageError } from '../../errors.js'
import { announceRecorded, versionResult } from '../publishing.js'
import type { Command } from '../command.js'

function positive (text: unknown, flag: string): number | undefined {
  if (text == null) return undefined
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number`)
  return n
}

const command: Command = {
  usage: 'publish <appliance.json> [--key NAME]... [--version N] [--expires DAYS] [--threshold N] [--cosigner KEY]... [--rotate-to NAME]... [--rotate-threshold N] [--out FILE] [--no-announce]',
  summary: 'Import an appliance\'s disks and boot files (reusing stored blocks), write and sign its manifest, pin it, and announce it (gossip + DHT) through the daemon.',
  help: `Options:
  --key NAME             signing key (repeatable; default "default"): a threshold of the appliance's keys
  --version N            default: the last published version + 1 (must be higher)
  --expires DAYS         hosts refuse the manifest after this (default 30)
  --threshold N          signatures required, when this publish founds a new appliance (default 1)
  --cosigner KEY         when founding: another publisher's public key (its fingerprint 12D3Koo…, or
                         the base64 key from key export), repeatable; its private key stays on its host
  --rotate-to NAME       hand the appliance over to these keys (repeatable): the old keys sign the rotation
  --rotate-threshold N   signatures the new keys require (default 1)
  --out FILE             also write the signed manifest (dag-cbor envelope) to FILE
  --no-announce          write it to --out FILE only, signed by the keys here (maybe fewer than the
                         threshold): its disks are imported and pinned, but it is not recorded as
                         published nor announced. The other keys' holders run
                         collective-peer sign FILE; then collective-peer announce FILE announces it.
The appliance id is derived from the founding keys and the name: the same keys and name, the same id.
Below the threshold without --no-announce: ERR_THRESHOLD (nothing imported). A --key the appliance
does not list: ERR_KEY_NOT_LISTED.
JSON result: {"id", "version", "root", "disks": [{"name", "root", "size"}], "bytesStored", "signatures", "threshold",
"signers": [fingerprint], "file" (with --out), "announced": {"gossipPeers", "dht"} | null}`,
  options: {
    key: { type: 'string', multiple: true },
    version: { type: 'string' },
    expires: { type: 'string' },
    threshold: { type: 'string' },
    cosigner: { type: 'string', multiple: true },
    'rotate-to': { type: 'string', multiple: true },
    'rotate-threshold': { type: 'string' },
    out: { type: 'string' },
    'no-announce': { type: 'boolean' }
  },
  positionals: 1,
  async run (ctx, [file], values) {
    const draft = values['no-announce'] === true
    const out = values.out as string | undefined
    if (draft && out == null) throw new UsageError('--no-announce needs --out FILE (where the partly signed manifest goes)')
    const keyStore = new KeyStore(ctx.dataDir)
    const keys = await Promise.all(((values.key as string[] | undefined) ?? ['default']).map(async n => await keyStore.load(n)))
    const rotateTo = await Promise.all(((values['rotate-to'] as string[] | undefined) ?? []).map(async n => await keyStore.load(n)))
    const cosigners = ((values.cosigner as string[] | undefined) ?? []).map(parsePublicKey)
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
      cosigners,
      expiresDays: positive(values.expires, '--expires'),
      rotateTo,
      rotateThreshold: positive(values['rotate-threshold'], '--rotate-threshold'),
      draft,
      tmpDir: ctx.tmpDir,
      signal: ctx.signal,
      onProgress: e => { ctx.progress.update({ label: 'import', done: e.done, total: e.size }, e) }
    })
    const { manifest } = result
    const id = manifest.id.toString()
    if (out != null) await writeManifestFile(ctx.path(out), result.envelope)
    const announced = result.recorded ? await announceRecorded(ctx, id, result.envelope) : null
    const signed = `${result.signers.length} of ${result.threshold} signatures`
    if (result.recorded) {
      ctx.note(`published ${manifest.name} v${manifest.version} (${result.bytesStored} new bytes stored)`)
    } else {
      const next = result.signers.length < result.threshold ? `have the other keys sign it (collective-peer sign ${out}), then ` : ''
      ctx.note(`signed ${manifest.name} v${manifest.version} (${signed}; ${result.bytesStored} new bytes stored, pinned) into ${out}, not announced: ${next}collective-peer announce ${out}`)
    }
    ctx.say(id)
    ctx.result({
      ...versionResult(manifest),
      bytesStored: result.bytesStored,
      signatures: result.signers.length,
      threshold: result.threshold,
      signers: result.signers,
      ...(out != null ? { file: ctx.path(out) } : {}),
      announced
    })
  }
}

export default command
