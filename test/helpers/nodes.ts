import { afterAll } from 'vitest'
import { createNode, startNode, type CollectiveNode } from '../../src/net/node.js'

/**
 * Nodes of the project's factory (src/net/node.ts) in this process, stopped after the calling
 * `describe`'s tests. `pair()` starts two, each listening on 127.0.0.1 without mDNS.
 */
export function inProcessNodes (): { pair: () => Promise<[CollectiveNode, CollectiveNode]> } {
  const nodes: CollectiveNode[] = []
  afterAll(async () => { await Promise.all(nodes.map(async n => { await n.stop() })) })
  return {
    async pair () {
      const pair: [CollectiveNode, CollectiveNode] = [
        await createNode({ listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false }),
        await createNode({ listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
      ]
      nodes.push(...pair)
      await Promise.all(pair.map(async node => { await startNode(node) }))
      return pair
    }
  }
}
