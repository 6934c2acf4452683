import { decodeProfile, MAX_PROFILE_BYTES } from './codec.js'
import { readBlob } from './blob.js'
import { prefetchProfile, type PrefetchOptions, type PrefetchResult } from './prefetch.js'
import type { BlockGetter } from '../../dag/index.js'
import type { BlockFetcher } from '../lazy-blocks.js'
import type { CID } from 'multiformats/cid'

export interface BootPrefetch {
  /** The profile blob's CID (from the appliance's manifest). */
  profile: CID
  /** The VM's disks, in the manifest's order (the profile's disk indices). */
  disks: CID[]
  /** Where each root's blocks come from (the store, the swarm behind it at demand priority). */
  blocksFor(root: CID): BlockGetter
  hasMany(cids: CID[]): Promise<boolean[]>
  fetcher: BlockFetcher
  /** Blocks fetched at prefetch priority, as they arrive. */
  onFetched?(blocks: number, bytes: number): void
}

/**
 * A VM's boot prefetch: fetches the profile blob (small; at demand priority, it gates the rest),
 * checks it, then fetches its ranges in order at prefetch priority.
 */
export async function prefetchBootProfile (init: BootPrefetch, options: PrefetchOptions = {}): Promise<PrefetchResult> {
  const profile = decodeProfile(await readBlob(init.blocksFor(init.profile), init.profile, MAX_PROFILE_BYTES, options))
  let counted = { blocks: 0, bytes: 0 }
  return await prefetchProfile(profile, {
    disks: init.disks.map(root => ({ root, blocks: init.blocksFor(root) })),
    hasMany: init.hasMany,
    fetch: async (root, cids, o) => await init.fetcher.fetch(root, cids, o)
  }, {
    ...options,
    onProgress: event => {
      if (event.type === 'profile:progress') {
        init.onFetched?.(event.blocks - counted.blocks, event.bytes - counted.bytes)
        counted = { blocks: event.blocks, bytes: event.bytes }
      }
      options.onProgress?.(event)
    }
  })
}
