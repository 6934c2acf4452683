import { Appliances, KeyStore, cosignEnvelope, fingerprint, decodeEnvelope, decodeManifest, readManifestFile, writeManifestFile } from '../../publish/index.js'
import { toTrusted } from '../../publish/state.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'sign <FILE.manifest> [--key NAME]... [--out FILE]',
  summary: 'Add this host\'s signature to a partly signed manifest (publish --no-announce --out), for appliances that need several publishers\' keys.',
  help: `Options:
  --key NAME   signing key (repeatable; default "default"); each must be one of the appliance's keys
  --out FILE   write the signed manifest there (default: back into FILE, atomically)
The manifest is checked first as a host would check it, but for the signatures still missing: at most
64 KiB (ERR_MANIFEST_TOO_LARGE), dag-cbor and schema (ERR_INVALID_MANIFEST), its id and key chain,
every signature so far valid (ERR_BAD_SIGNATURE) and by one of its keys (ERR_UNTRUSTED_KEY), not
expired (ERR_EXPIRED), above the last version this host knows (ERR_STALE_VERSION). Then: a key it
does not list, ERR_KEY_NOT_LISTED; a key that signed already, ERR_ALREADY_SIGNED. Nothing is written
on any error. Needs no store and no daemon: it runs on a host that holds only the key.
When enough keys have signed: collective-peer announce FILE, on the host that published it.
JSON result: {"id", "version", "file", "signatures", "threshold", "signers": [fingerprint], "added": [fingerprint], "complete"}`,
  options: {
    key: { type: 'string', multiple: true },
    out: { type: 'string' }
  },
  positionals: 1,
  async run (ctx, [file], values) {
    const path = ctx.path(file!)
    const out = ctx.path((values.out as string | undefined) ?? file!)
    const envelope = await readManifestFile(path)
    // What this host already trusts for the appliance, if it knows it (publishes or follows it).
    const id = decodeManifest(decodeEnvelope(envelope).manifest).id.toString()
    const state = await new Appliances(ctx.dataDir).get(id).catch(() => undefined)
    const keyStore = new KeyStore(ctx.dataDir)
    const keys = await Promise.all(((values.key as string[] | undefined) ?? ['default']).map(async n => await keyStore.load(n)))
    const result = await cosignEnvelope(envelope, keys, { trusted: state?.trust != null ? toTrusted(state.trust) : undefined, lastVersion: state?.lastVersion })
    await writeManifestFile(out, result.envelope)
    const { manifest } = result
    const signatures = result.signers.length
    const threshold = result.trust.threshold
    const complete = signatures >= threshold
    ctx.note(`signed ${manifest.name} v${manifest.version} with ${result.added.join(', ')}: ${signatures} of ${threshold} signatures${complete ? `, ready: collective-peer announce ${values.out as string | undefined ?? file}` : ''}`)
    ctx.say(out)
    ctx.result({
      id: manifest.id.toString(),
      version: manifest.version,
      file: out,
      signatures,
      threshold,
      signers: result.signers.map(k => fingerprint(k)),
      added: result.added,
      complete
    })
  }
}

export default command
