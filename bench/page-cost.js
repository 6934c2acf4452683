#!/usr/bin/env node
// What new page-cache pages cost this machine: a diagnostic, not a figure of ours.
//
//   node bench/page-cost.js [--gib N]
//
// Writes N GiB (default 4) of 1 GiB files, 256 KiB pwritev calls as a pack write makes them, keeps
// them all, and times each file; then deletes them and writes one more. The first GiB or two reuse
// pages the kernel freed lately; past them every page is one the guest has not touched for a while,
// and on this nested VM (Firecracker; free page reporting, DAMON reclaim) the hypervisor must back it
// again on first touch. perf counts that wait inside the copy (copy_folio_from_iter_atomic): 10 % of
// all CPU in a warm N = 16 fan-out, whose hosts write 2 GiB of new pages per pull. The baseline is the
// first file (recycled pages) of the same run. Last stdout line: one JSON object.
import { closeSync, openSync, unlinkSync, writevSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { log, machine, MIB, parseArgs, rmrf, round, tempDir } from './lib.js';

const args = parseArgs();
const gib = Math.max(2, Number(args.gib ?? 4));
const dir = tempDir('page-cost');
const buffers = Array.from({ length: 16 }, () => randomBytes(16 * 1024));

function writeGiB(path) {
  const fd = openSync(path, 'w');
  const t = performance.now();
  try {
    for (let i = 0; i < 1024 * MIB / (16 * 16 * 1024); i++) writevSync(fd, buffers);
  } finally {
    closeSync(fd);
  }
  return (performance.now() - t) / 1000;
}

try {
  const loadavgAtStart = loadavg().map((x) => round(x, 2));
  const seconds = [];
  for (let i = 0; i < gib; i++) {
    seconds.push(writeGiB(join(dir, `f${i}`)));
    log(`GiB ${i + 1} (kept): ${seconds[i].toFixed(2)} s`);
  }
  for (let i = 0; i < gib; i++) unlinkSync(join(dir, `f${i}`));
  const again = writeGiB(join(dir, 'again'));
  log(`after deleting them, 1 GiB more: ${again.toFixed(2)} s (pages just freed)`);
  const slowest = Math.max(...seconds);
  log(`slowest GiB / first GiB = ${(slowest / seconds[0]).toFixed(1)}x`);
  console.log(JSON.stringify({ bench: 'page-cost', machine: machine(), loadavgAtStart, secondsPerGiB: seconds.map((s) => round(s)),
    afterDelete: round(again), slowestVsFirst: round(slowest / seconds[0], 2) }));
} finally {
  rmrf(dir);
}
