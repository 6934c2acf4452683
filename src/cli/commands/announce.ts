import { Appliances, ThresholdError, adoptVersion, readManifestFile } from '../../publish/index.js'
import { announceRecorded, versionResult } from '../publishing.js'
import type { Command } from '../command.js'

const command: Command = {
  usage: 'announce <FILE.manifest>',
  summary: 'Announce a signed manifest written by publish --no-announce --out and signed by enough keys (sign): record it as published here, pin it, send it out (gossip + DHT).',
  help: `Checked as every host will check it: at most 64 KiB, schema, id, key chain, and a threshold of
distinct valid signatures by the appliance's keys (ERR_THRESHOLD: have more keys sign it first);
a version above the last one recorded here (ERR_STALE_VERSION; the very same manifest again is
announced again), not expired (ERR_EXPIRED). Its disks and boot files must be complete in this
host's store (ERR_BLOCK_MISSING): announce from the host that ran publish --no-announce, which
imported and pinned them. Without a daemon, it is recorded and the daemon announces it when it starts.
JSON result: {"id", "version", "root", "disks": [{"name", "root", "size"}], "signatures", "threshold", "signers": [fingerprint], "announced": {"gossipPeers", "dht"} | null}`,
  positionals: 1,
  async run (ctx, [file]) {
    const envelope = await readManifestFile(ctx.path(file!))
    const store = await ctx.openStore()
    const appliances = ctx.daemon?.appliances ?? new Appliances(ctx.dataDir)
    const result = await adoptVersion({ store, appliances, envelope, signal: ctx.signal }).catch(err => {
      if (err instanceof ThresholdError) throw new ThresholdError(`${err.message}: have the other keys sign it first (collective-peer sign ${file!})`)
      throw err
    })
    const { manifest } = result
    const id = manifest.id.toString()
    const announced = await announceRecorded(ctx, id, envelope)
    ctx.note(`${result.recorded ? 'published' : 'announced again'} ${manifest.name} v${manifest.version} (${result.signers.length} of ${result.threshold} signatures)`)
    ctx.say(id)
    ctx.result({ ...versionResult(manifest), signatures: result.signers.length, threshold: result.threshold, signers: result.signers, announced })
  }
}

export default command
