import { Appliances, ApplianceNotFoundError, type ApplianceState } from '../publish/index.js'
import type { Context } from './context.js'

/** The appliance state of the data dir: the daemon's, or opened here. */
export function appliancesOf (ctx: Context): Appliances {
  return ctx.daemon?.appliances ?? new Appliances(ctx.dataDir)
}

/** An appliance by id, or by name when exactly one known appliance has it. */
export async function findAppliance (ctx: Context, ref: string): Promise<ApplianceState> {
  const appliances = appliancesOf(ctx)
  const all = await appliances.list()
  const byId = all.find(s => s.id === ref)
  if (byId != null) return byId
  const byName = all.filter(s => s.name === ref)
  if (byName.length === 1) return byName[0]!
  if (byName.length > 1) throw new ApplianceNotFoundError(`several appliances are named "${ref}": give the id`)
  throw new ApplianceNotFoundError(`appliance "${ref}" is unknown here (subscribe <id> first)`)
}
