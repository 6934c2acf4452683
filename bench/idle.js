#!/usr/bin/env node
// CPU of idle host daemons in a swarm: what each host pays for being connected, before any pull.
// On the 2-core bench machine the fan-out's 16 hosts share the CPU with the transfer itself.
//
//   node bench/idle.js [--hosts N] [--settle S] [--seconds S]
//
// One daemon plus N-1 (default 16 in all) bootstrapped to it on 127.0.0.1; after --settle seconds
// (default 15: connections, identify, the DHT's first queries) the CPU time of every daemon is read
// from /proc over --seconds (default 20). No baseline: the figure is compared with earlier commits
// (docs/benchmarks.md). Last stdout line: one JSON object.
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { log, machine, parseArgs, rmrf, round, tempDir } from './lib.js';
import { cpuSeconds, startDaemon } from './swarm-lib.js';

const args = parseArgs();
const hosts = Math.max(2, Number(args.hosts ?? 16));
const settle = Number(args.settle ?? 15);
const seconds = Number(args.seconds ?? 20);
const loadavgAtStart = loadavg().map((x) => round(x, 2));
const dir = tempDir('idle');
const daemons = [];
const cleanup = async () => {
  await Promise.all(daemons.map((d) => d.proc.stop(5_000)));
  rmrf(dir);
};
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { cleanup().finally(() => process.exit(130)); });

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));
try {
  const first = await startDaemon(join(dir, 'd0'), { name: 'd0' });
  daemons.push(first);
  for (let i = 1; i < hosts; i++) daemons.push(await startDaemon(join(dir, `d${i}`), { name: `d${i}`, bootstrap: [first.p2p] }));
  log(`${hosts} daemons on 127.0.0.1, all bootstrapped to the first; settling ${settle} s`);
  await sleep(settle);
  const before = daemons.map((d) => cpuSeconds(d.proc.pid));
  await sleep(seconds);
  const used = daemons.map((d, i) => cpuSeconds(d.proc.pid) - before[i]);
  const total = used.reduce((n, x) => n + x, 0);
  const perDaemon = total / hosts / seconds;
  log(`idle CPU over ${seconds} s: ${used.map((x) => x.toFixed(2)).join(' ')} s`);
  log(`total ${total.toFixed(2)} CPU-s = ${(total / seconds * 100).toFixed(1)} % of a core for ${hosts} daemons, ` +
    `${(perDaemon * 100).toFixed(2)} % each`);
  console.log(JSON.stringify({ bench: 'idle', hosts, seconds, machine: machine(), loadavgAtStart,
    cpuSeconds: round(total, 2), perDaemonCorePercent: round(perDaemon * 100, 2), perDaemon: used.map((x) => round(x, 2)) }));
} finally {
  await cleanup();
}
