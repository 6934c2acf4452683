#!/usr/bin/env node
// An appliance update over the swarm: a publisher daemon and N host daemons on loopback. The hosts
// subscribe and fetch v1; then v2 (a real Debian update of the same disk, .cache/fixtures) is
// published. Reported: bytes each host fetched for v2 vs the diff's ideal (`collective-peer diff`)
// and vs a full download of v2, block bytes received on the wire, the time from `publish` returning
// to v2 pinned on every host, and casync's bytes for the same pair of images (its store growth from
// v1 to v2, zstd chunks, same run).
//
//   node bench/update.js [--hosts 8] [--v1 PATH --v2 PATH]
//
// Last stdout line: one JSON object.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, ensureFixtures, fmtMiB, log, machine, MIB, parseArgs, rmrf, round, run, tempDir, treeBytes } from './lib.js';
import { startDaemon } from './swarm-lib.js';

const args = parseArgs();
const N = Number(args.hosts ?? 8);
const fixtures = (args.v1 && args.v2) ? { v1: args.v1, v2: args.v2 } : ensureFixtures();

const dir = tempDir('update');
const procs = [];
const stopAll = async () => { await Promise.all(procs.map((p) => p.stop(10_000).catch(() => {}))); };
process.on('SIGINT', async () => { await stopAll(); rmrf(dir); process.exit(130); });

const appFile = (v, image) => {
  const file = join(dir, `app-v${v}.json`);
  writeFileSync(file, JSON.stringify({ name: 'bench-update', disks: [{ role: 'program', image }], vm: { memory: '512M', cpus: 1 }, config: {} }));
  return file;
};

async function current(dataDir, id) {
  const r = await cli(dataDir, ['appliance', 'ls'], { measureRss: false });
  return r.events.find((l) => l.id === id)?.current;
}

async function until(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

try {
  const pubDir = join(dir, 'publisher');
  const publisher = await startDaemon(pubDir, { name: 'publisher' });
  procs.push(publisher.proc);
  await cli(pubDir, ['key', 'create', '--name', 'default'], { measureRss: false });
  const hosts = [];
  for (let i = 0; i < N; i++) {
    const d = join(dir, `host${i}`);
    const h = await startDaemon(d, { name: `host${i}`, bootstrap: [publisher.p2p] });
    procs.push(h.proc);
    hosts.push(d);
  }
  log(`${N} hosts and a publisher on loopback; publishing v1 (${fixtures.v1})`);
  const p1 = await cli(pubDir, ['publish', appFile(1, fixtures.v1)], { measureRss: false, timeoutMs: 30 * 60_000 });
  const id = p1.result.id;
  const t1 = Date.now();
  await Promise.all(hosts.map((d) => cli(d, ['subscribe', id], { measureRss: false, timeoutMs: 30 * 60_000 })));
  await until('v1 on every host', async () => (await Promise.all(hosts.map((d) => current(d, id)))).every((v) => v === 1), 30 * 60_000);
  log(`v1 on ${N} hosts in ${((Date.now() - t1) / 1000).toFixed(1)} s`);

  const before = await Promise.all(hosts.map(async (d) => (await cli(d, ['status'], { measureRss: false })).result.transfer));
  const t0 = Date.now();
  const p2 = await cli(pubDir, ['publish', appFile(2, fixtures.v2)], { measureRss: false, timeoutMs: 30 * 60_000 });
  const announced = Date.now();
  await until('v2 on every host', async () => (await Promise.all(hosts.map((d) => current(d, id)))).every((v) => v === 2), 10 * 60_000);
  const allPinnedSeconds = (Date.now() - announced) / 1000;
  const publishSeconds = (announced - t0) / 1000;

  const diff = (await cli(pubDir, ['diff', p1.result.root, p2.result.root], { measureRss: false })).result;
  const perHost = [];
  for (const [i, d] of hosts.entries()) {
    const events = (await cli(d, ["log"], { measureRss: false })).events.filter((l) => l.type === 'fetched' && l.version === 2);
    const transfer = (await cli(d, ['status'], { measureRss: false })).result.transfer;
    const received = transfer.bytesReceived - before[i].bytesReceived;
    // Blocks received, every copy counted: more than the diff's blocks means endgame duplicates.
    const blocksReceived = transfer.blocksReceived - before[i].blocksReceived;
    perHost.push({ bytesFetched: events[0]?.bytesFetched ?? null, wireReceived: received, blocksReceived });
  }
  const full = (await cli(join(dir, 'full'), ['import', fixtures.v2], { measureRss: false, timeoutMs: 30 * 60_000 })).result.bytesStored;

  // casync: v1 then v2 into one store; the growth is what a casync client fetches for v2.
  const cas = join(dir, 'casync');
  await run('casync', ['make', `--store=${cas}`, join(dir, 'v1.caibx'), fixtures.v1], { measureRss: false });
  const s1 = treeBytes(cas, '.cacnk').bytes;
  await run('casync', ['make', `--store=${cas}`, join(dir, 'v2.caibx'), fixtures.v2], { measureRss: false });
  const casyncBytes = treeBytes(cas, '.cacnk').bytes - s1;

  const maxFetched = Math.max(...perHost.map((h) => h.bytesFetched));
  const maxWire = Math.max(...perHost.map((h) => h.wireReceived));
  log(`diff ideal: ${fmtMiB(diff.bytes)} MiB raw, ${fmtMiB(diff.wireBytes)} MiB compressed; full v2: ${fmtMiB(full)} MiB; casync: ${fmtMiB(casyncBytes)} MiB`);
  for (const [i, h] of perHost.entries()) log(`host${i}: fetched ${fmtMiB(h.bytesFetched)} MiB (${round(h.bytesFetched / diff.bytes, 4)} x diff), wire ${fmtMiB(h.wireReceived)} MiB (${round(h.wireReceived / diff.wireBytes, 4)} x diff compressed), ${h.blocksReceived} blocks received for ${diff.blocks} in the diff`);
  log(`publish (import + sign + announce): ${publishSeconds.toFixed(1)} s; announcement -> v2 pinned on all ${N} hosts: ${allPinnedSeconds.toFixed(1)} s`);
  log(`wire bytes vs casync: ${round(maxWire / casyncBytes, 3)} (goal <= 0.8); fetched vs diff: ${round(maxFetched / diff.bytes, 4)} (goal 1, overhead <= 2 %)`);
  console.log(JSON.stringify({
    bench: 'update', machine: machine(), hosts: N,
    diffBytes: diff.bytes, diffWireBytes: diff.wireBytes, fullDownloadBytes: full, casyncBytes,
    perHost, maxFetchedVsDiff: round(maxFetched / diff.bytes, 4), maxWireVsDiffWire: round(maxWire / diff.wireBytes, 4),
    wireVsCasync: round(maxWire / casyncBytes, 3), fetchedVsFull: round(maxFetched / full, 4),
    publishSeconds: round(publishSeconds, 2), announcementToAllPinnedSeconds: round(allPinnedSeconds, 2),
  }));
} finally {
  await stopAll();
  rmrf(dir);
}
