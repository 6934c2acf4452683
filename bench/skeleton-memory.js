#!/usr/bin/env node
// Heap a pull holds per leaf of an image's DAG: a loaded skeleton (src/net/exchange/skeleton.ts, the
// leaves as their CIDs' bytes in one buffer), against the same leaves held as CID objects (what the
// skeleton held before 2026-11-26T15:50Z), measured side by side in one process.
//
//   node bench/skeleton-memory.js [--size-mib N]
//
// An image of N MiB (default 1024) of random bytes is imported into a temporary data dir; its
// skeleton is loaded from the store with gc() before and after, then every leaf's CID is made and
// kept, with gc() before and after. Last stdout line: one JSON object.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, cliAvailable, log, machine, MIB, parseArgs, rmrf, round, table, tempDir } from './lib.js';
import { makeImage } from './swarm-lib.js';

if (typeof globalThis.gc !== 'function') {
  // Heap figures need a full collection before each reading.
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

await import('../dist/util/polyfill.js');
const { openStore } = await import('../dist/store/index.js');
const { loadSkeleton, leafCids } = await import('../dist/net/exchange/skeleton.js');
const { parseCid } = await import('../dist/dag/hash.js');

const args = parseArgs();
const sizeMiB = Number(args['size-mib'] ?? 1024);
const a = await cliAvailable();
if (!a.ok) {
  console.error(`collective-peer CLI not usable (${a.why}); build it first (npm run build)`);
  process.exit(2);
}

const heap = () => {
  globalThis.gc();
  globalThis.gc();
  return process.memoryUsage().heapUsed;
};

const dir = tempDir('skeleton-memory');
try {
  const image = join(dir, 'image.raw');
  makeImage(image, sizeMiB * MIB);
  const imp = await cli(join(dir, 'data'), ['import', image]);
  rmrf(image);
  const root = parseCid(imp.result.root);
  log(`imported ${sizeMiB} MiB: ${root}, ${imp.result.blocks} blocks`);
  const store = await openStore(join(dir, 'data'));
  try {
    const rootBytes = await store.blocks.get(root);
    const h0 = heap();
    const skeleton = await loadSkeleton(root, rootBytes, async (cids) => await store.blocks.getMany(cids));
    const h1 = heap();
    const cids = leafCids(skeleton);
    const h2 = heap();
    const leaves = skeleton.count;
    const compact = (h1 - h0) / leaves;
    const objects = (h1 - h0 + h2 - h1) / leaves;
    log('');
    table(['held per leaf', 'bytes of heap', 'MiB in all'], [
      ['skeleton (CID bytes in one buffer)', Math.round(compact), ((h1 - h0) / MIB).toFixed(1)],
      ['skeleton + every leaf as a CID object', Math.round(objects), ((h2 - h0) / MIB).toFixed(1)],
    ]);
    log(`skeleton / with CID objects = ${(compact / objects).toFixed(2)} (${leaves} leaves; ${cids.length} CIDs kept for the baseline)`);
    console.log(JSON.stringify({ bench: 'skeleton-memory', sizeMiB, leaves, machine: machine(),
      bytesPerLeaf: round(compact, 1), withCidObjectsBytesPerLeaf: round(objects, 1), ratio: round(compact / objects, 3) }));
  } finally {
    await store.close();
  }
} finally {
  rmrf(dir);
}
