#!/usr/bin/env node
// Import throughput: `collective-peer import` vs `casync make` (its defaults) on the same image, same run.
//
//   node bench/import.js [--image PATH] [--runs N] [--chunker fixed|fastcdc] [--chunk-size BYTES]
//                        [--baseline-only]
//
// Both tools read the image from the page cache (it is read once with `cat` first); each run gets a
// fresh data dir / store, and dirty pages are flushed (`sync`, untimed) between runs. With --runs N the
// fastest run of each tool is reported. Peak RSS comes from /usr/bin/time (%M).
// Last stdout line: one JSON object with our figures and casync's.
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { cli, cliAvailable, ensureFixtures, fileSize, fmtMiB, log, machine, MIB, parseArgs, rmrf, round, run, sync,
  table, tempDir, treeBytes, warm } from './lib.js';

const loadavgAtStart = loadavg().map((x) => round(x, 2));

const args = parseArgs();
const runs = Math.max(1, Number(args.runs ?? 1));
const image = args.image ?? ensureFixtures().bench;
const bytes = fileSize(image);
const baselineOnly = Boolean(args['baseline-only']);
const extra = [];
if (args.chunker) extra.push('--chunker', String(args.chunker));
if (args['chunk-size']) extra.push('--chunk-size', String(args['chunk-size']));

if (!baselineOnly) {
  const a = await cliAvailable();
  if (!a.ok) {
    console.error(`collective-peer CLI not usable (${a.why}); build it (npm run build) or pass --baseline-only`);
    process.exit(2);
  }
}

log(`image ${image}: ${fmtMiB(bytes)} MiB; warming the page cache`);
warm(image);

const ours = [];
const casync = [];
for (let i = 0; i < runs; i++) {
  if (!baselineOnly) {
    const dir = tempDir('import');
    try {
      sync();
      const r = await cli(join(dir, 'data'), ['import', image, ...extra], { timeoutMs: 30 * 60_000 });
      const o = {
        seconds: r.seconds, mibPerSec: bytes / MIB / r.seconds, peakRssMiB: r.peakRssKiB ? r.peakRssKiB / 1024 : null,
        root: r.result.root, blocks: r.result.blocks, bytesStored: r.result.bytesStored,
      };
      ours.push(o);
      log(`ours   run ${i + 1}: ${o.seconds.toFixed(2)} s, ${o.mibPerSec.toFixed(0)} MiB/s, peak RSS ` +
        `${o.peakRssMiB?.toFixed(0)} MiB, ${o.blocks} blocks, ${fmtMiB(o.bytesStored)} MiB stored`);
    } finally { rmrf(dir); }
  }
  const dir = tempDir('casync');
  try {
    sync();
    const store = join(dir, 'store');
    const r = await run('casync', ['make', `--store=${store}`, join(dir, 'out.caibx'), image], { timeoutMs: 30 * 60_000 });
    const st = treeBytes(store, '.cacnk');
    const c = {
      seconds: r.seconds, mibPerSec: bytes / MIB / r.seconds, peakRssMiB: r.peakRssKiB ? r.peakRssKiB / 1024 : null,
      chunks: st.files, storeBytes: st.bytes,
    };
    casync.push(c);
    log(`casync run ${i + 1}: ${c.seconds.toFixed(2)} s, ${c.mibPerSec.toFixed(0)} MiB/s, peak RSS ` +
      `${c.peakRssMiB?.toFixed(0)} MiB, ${c.chunks} chunks, ${fmtMiB(c.storeBytes)} MiB in store (zstd)`);
  } finally { rmrf(dir); }
}

const best = (xs) => (xs.length ? xs.reduce((a, b) => (b.seconds < a.seconds ? b : a)) : null);
const o = best(ours);
const c = best(casync);
const speedup = o ? c.seconds / o.seconds : null;

log('');
table(['tool', 'seconds', 'MiB/s', 'peak RSS MiB', 'stored MiB'], [
  ...(o ? [['collective-peer import' + (extra.length ? ` ${extra.join(' ')}` : ''), o.seconds.toFixed(2),
    o.mibPerSec.toFixed(0), o.peakRssMiB?.toFixed(0), fmtMiB(o.bytesStored)]] : []),
  ['casync make (defaults)', c.seconds.toFixed(2), c.mibPerSec.toFixed(0), c.peakRssMiB?.toFixed(0), fmtMiB(c.storeBytes)],
]);
if (o) log(`speedup casync_time / our_time = ${speedup.toFixed(2)} (goal >= 3)`);

console.log(JSON.stringify({
  bench: 'import', image, bytes, runs,
  machine: machine(), loadavgAtStart, loadavgAtEnd: loadavg().map((x) => round(x, 2)),
  ours: o && {
    seconds: round(o.seconds), mibPerSec: round(o.mibPerSec, 1), peakRssMiB: round(o.peakRssMiB, 1),
    chunker: args.chunker ?? null, chunkSize: args['chunk-size'] ? Number(args['chunk-size']) : null,
    root: o.root, blocks: o.blocks, bytesStored: o.bytesStored, allSeconds: ours.map((x) => round(x.seconds)),
  },
  casync: {
    seconds: round(c.seconds), mibPerSec: round(c.mibPerSec, 1), peakRssMiB: round(c.peakRssMiB, 1),
    chunks: c.chunks, storeBytes: c.storeBytes, allSeconds: casync.map((x) => round(x.seconds)),
  },
  speedup: round(speedup),
}));
