import { decodeEnvelope, decodeManifest, fingerprint, type ApplianceState } from '../../publish/index.js'
import { appliancesOf, findAppliance } from '../appliances.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'

function summary (s: ApplianceState): Record<string, unknown> {
  return { id: s.id, name: s.name, current: s.current ?? null, previous: s.previous ?? null, lastVersion: s.lastVersion, subscribed: s.subscribed, published: s.published }
}

const command: Command = {
  usage: 'appliance ls | appliance show <id|name> [--version N] | appliance versions <id|name>',
  summary: 'Appliances this host publishes or follows: their versions, and a version\'s manifest.',
  help: 'JSON: ls → one {"id", "name", "current", "previous", "lastVersion", "subscribed", "published"} per appliance; show → the manifest; versions → one line per version',
  options: { version: { type: 'string' } },
  positionals: [1, 2],
  async run (ctx, [verb, ref], values) {
    const appliances = appliancesOf(ctx)
    if (verb === 'ls') {
      const all = await appliances.list()
      for (const s of all) {
        ctx.say(`${s.id}  ${s.name || '?'}  v${s.current ?? '-'}${s.published ? '  (published here)' : ''}${s.subscribed ? '  (subscribed)' : ''}`)
        ctx.emit(summary(s))
      }
      ctx.result({ appliances: all.length })
      return
    }
    if (ref == null) throw new UsageError(`usage: collective-peer appliance ${verb} <id|name>`)
    const state = await findAppliance(ctx, ref)
    if (verb === 'versions') {
      for (const v of state.versions.sort((a, b) => a.version - b.version)) {
        const mark = v.version === state.current ? ' (current)' : v.version === state.previous ? ' (previous)' : ''
        ctx.say(`v${v.version}  created ${new Date(v.created * 1000).toISOString()}  expires ${new Date(v.expires * 1000).toISOString()}  ${v.fetched ? 'local' : 'not local'}${mark}`)
        ctx.emit({ ...v, current: v.version === state.current })
      }
      ctx.result(summary(state))
      return
    }
    if (verb === 'show') {
      const version = values.version != null ? Number(values.version) : state.current ?? state.lastVersion
      const envelope = decodeEnvelope(await appliances.envelope(state.id, version))
      const m = decodeManifest(envelope.manifest)
      const view = {
        id: m.id.toString(),
        name: m.name,
        version: m.version,
        created: new Date(m.created * 1000).toISOString(),
        expires: new Date(m.expires * 1000).toISOString(),
        keys: m.keys.map(k => fingerprint(k)),
        threshold: m.threshold,
        rotations: m.rotations.length,
        signedBy: envelope.signatures.map(s => fingerprint(s.key)),
        disks: m.disks.map(d => ({ name: d.name, role: d.role, root: d.root.toString(), size: d.size })),
        vm: { ...m.vm, kernel: m.vm.kernel?.root.toString(), initrd: m.vm.initrd?.root.toString() },
        config: m.config,
        ...(m.bootProfile != null ? { bootProfile: { root: m.bootProfile.root.toString(), size: m.bootProfile.size } } : {})
      }
      if (!ctx.json) ctx.say(JSON.stringify(view, null, 2))
      ctx.result(view)
      return
    }
    throw new UsageError(`unknown appliance action "${verb}" (ls, show or versions)`)
  }
}

export default command
