#!/usr/bin/env node
// Update bytes: what a host holding update-v1.img must fetch to get update-v2.img (a Debian point
// update + kernel ABI bump done in place; see scripts/fixtures/make-images.sh), for each chunker
// configuration, against casync and against the 4 KiB-dedup ideal, all in the same run.
//
//   node bench/update-bytes.js [--old PATH --new PATH] [--configs fixed:16384,fastcdc:65536,...]
//                              [--baseline-only] [--no-casync16] [--batch 32]
//
// ours:   fresh data dir per config; import v1, import v2, `diff v1 v2` -> bytes (raw), wireBytes
//         (DEFLATE-1 per block, as `diff` reports it). Then batchWireBytes: the same blocks read from
//         the store and encoded with the exchange codec `zstd-batch` (src/net/exchange/codec.ts) the
//         way a transfer sends them: interior nodes first, then leaves, each in DAG order, in batches
//         of --batch blocks (default 32, at most 1 MiB raw), one payload per batch, headers included.
// casync: `casync make --store=S v1.caibx v1.img`, then the same for v2 into the same store; the
//         store's growth (apparent size of the new .cacnk files, zstd-compressed = what casync would
//         download) and, from the two indexes, the raw size of v2's chunks absent from v1.
//         Run with casync's defaults (16/64/256 KiB) and with --chunk-size=16384 (4/16/64 KiB).
// ideal:  distinct non-zero 4 KiB blocks of v2 not among v1's 4 KiB blocks, x 4096.
// Last stdout line: one JSON object with every row.
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { cli, cliAvailable, ensureFixtures, fileSize, fmtMiB, ideal4k, log, machine, parseArgs, parseCaibx, rmrf,
  round, run, sync, table, tempDir, treeBytes, warm } from './lib.js';

const loadavgAtStart = loadavg().map((x) => round(x, 2));

const DEFAULT_CONFIGS = 'fixed:16384,fixed:65536,fixed:262144,fastcdc:16384,fastcdc:65536';
const args = parseArgs();
const fx = args.old && args.new ? { v1: args.old, v2: args.new } : ensureFixtures();
const { v1, v2 } = fx;
const baselineOnly = Boolean(args['baseline-only']);
const BATCH = Number(args.batch ?? 32);
const BATCH_BYTES = 1024 * 1024;
const CODEC = 'zstd-batch';
const configs = String(args.configs ?? DEFAULT_CONFIGS).split(',').map((s) => {
  const [chunker, size] = s.split(':');
  if (!['fixed', 'fastcdc'].includes(chunker) || !(Number(size) > 0)) throw new Error(`bad config ${s}`);
  return { chunker, chunkSize: Number(size) };
});

if (!baselineOnly) {
  const a = await cliAvailable();
  if (!a.ok) {
    console.error(`collective-peer CLI not usable (${a.why}); build it (npm run build) or pass --baseline-only`);
    process.exit(2);
  }
}

log(`v1 ${v1} (${fmtMiB(fileSize(v1))} MiB), v2 ${v2} (${fmtMiB(fileSize(v2))} MiB)`);
warm(v1);
warm(v2);

// ---- 4 KiB ideal ----
let t0 = performance.now();
const ideal = ideal4k(v1, v2);
log(`4 KiB ideal: ${ideal.blocks} new distinct blocks = ${fmtMiB(ideal.bytes)} MiB ` +
  `(${((performance.now() - t0) / 1000).toFixed(1)} s)`);

// ---- casync ----
async function casyncRow(label, extraArgs) {
  const dir = tempDir('casync');
  try {
    const store = join(dir, 'store');
    sync();
    const m1 = await run('casync', ['make', ...extraArgs, `--store=${store}`, join(dir, 'v1.caibx'), v1]);
    const before = treeBytes(store, '.cacnk');
    sync();
    const m2 = await run('casync', ['make', ...extraArgs, `--store=${store}`, join(dir, 'v2.caibx'), v2]);
    const after = treeBytes(store, '.cacnk');
    const i1 = parseCaibx(join(dir, 'v1.caibx'));
    const i2 = parseCaibx(join(dir, 'v2.caibx'));
    const have = new Set(i1.chunks.map((c) => c.id));
    const fresh = new Map();
    for (const c of i2.chunks) if (!have.has(c.id)) fresh.set(c.id, c.size);
    const rawBytes = [...fresh.values()].reduce((a, b) => a + b, 0);
    const row = {
      tool: 'casync', label, chunkSizeMin: i2.chunkSizeMin, chunkSizeAvg: i2.chunkSizeAvg, chunkSizeMax: i2.chunkSizeMax,
      chunks: fresh.size, rawBytes, wireBytes: after.bytes - before.bytes, newChunkFiles: after.files - before.files,
      makeSeconds: [round(m1.seconds), round(m2.seconds)],
    };
    log(`casync ${label}: ${row.chunks} new chunks, raw ${fmtMiB(rawBytes)} MiB, store growth ` +
      `${fmtMiB(row.wireBytes)} MiB (make ${m1.seconds.toFixed(1)} s + ${m2.seconds.toFixed(1)} s)`);
    return row;
  } finally { rmrf(dir); }
}
const casync = [await casyncRow('defaults', [])];
if (!args['no-casync16']) casync.push(await casyncRow('--chunk-size=16384', ['--chunk-size=16384']));
const base = casync[0];

// ---- ours ----
/**
 * Bytes of v2's new blocks encoded with the exchange codec, in batches as a transfer sends them:
 * interior nodes first (fetched level by level), then leaves, each in the order `diff` lists them
 * (DAG order: the rarest-first order of a pull from one source is a rotation of it).
 */
async function batchWire(data, v1Root, v2Root) {
  const { openStore } = await import('../dist/store/index.js');
  const { diff, parseCid } = await import('../dist/dag/index.js');
  const { getCodec } = await import('../dist/net/exchange/codec.js');
  const codec = getCodec(CODEC);
  if (!codec) throw new Error(`codec ${CODEC} not available here`);
  const store = await openStore(data);
  try {
    const d = await diff(store.blocks, parseCid(v1Root), parseCid(v2Root), { noWire: true });
    const ordered = [...d.list.filter((b) => b.cid.code !== 0x55), ...d.list.filter((b) => b.cid.code === 0x55)];
    let bytes = 0;
    let batches = 0;
    let group = [];
    let groupBytes = 0;
    const flush = () => {
      if (group.length === 0) return;
      bytes += codec.encode(group).length;
      batches++;
      group = [];
      groupBytes = 0;
    };
    for (const b of ordered) {
      const block = await store.blocks.get(b.cid);
      if (group.length >= BATCH || groupBytes + block.length > BATCH_BYTES) flush();
      group.push(block);
      groupBytes += block.length;
    }
    flush();
    return { bytes, batches };
  } finally { await store.close(); }
}

const ours = [];
if (!baselineOnly) {
  for (const c of configs) {
    const dir = tempDir('update');
    try {
      const data = join(dir, 'data');
      const flags = ['--chunker', c.chunker, '--chunk-size', String(c.chunkSize)];
      sync();
      const a = await cli(data, ['import', v1, ...flags]);
      sync();
      const b = await cli(data, ['import', v2, ...flags]);
      const d = await cli(data, ['diff', a.result.root, b.result.root]);
      const bw = await batchWire(data, a.result.root, b.result.root);
      const row = {
        tool: 'collective-peer', chunker: c.chunker, chunkSize: c.chunkSize,
        blocks: d.result.blocks, bytes: d.result.bytes, wireBytes: d.result.wireBytes,
        batchCodec: CODEC, batchSize: BATCH, batches: bw.batches, batchWireBytes: bw.bytes,
        v1Root: a.result.root, v2Root: b.result.root, v1Blocks: a.result.blocks, v2Blocks: b.result.blocks,
        importSeconds: [round(a.seconds), round(b.seconds)],
      };
      ours.push(row);
      log(`${c.chunker} ${c.chunkSize}: ${row.blocks} blocks, raw ${fmtMiB(row.bytes)} MiB, wire ` +
        `${fmtMiB(row.wireBytes)} MiB DEFLATE-1, ${fmtMiB(row.batchWireBytes)} MiB ${CODEC} (imports ${a.seconds.toFixed(1)} s + ${b.seconds.toFixed(1)} s)`);
    } finally { rmrf(dir); }
  }
}

// ---- report ----
for (const r of ours) {
  r.wireVsCasync = round(r.wireBytes / base.wireBytes);
  r.batchWireVsCasync = round(r.batchWireBytes / base.wireBytes);
  r.bytesVsCasyncRaw = round(r.bytes / base.rawBytes);
  r.bytesVsIdeal = round(r.bytes / ideal.bytes);
}
for (const r of casync) r.bytesVsIdeal = round(r.rawBytes / ideal.bytes);

log('');
log(`bytes a host holding v1 must fetch for v2 (MiB); casync wire = its store growth (zstd chunks)`);
table(['config', 'blocks', 'raw MiB', `wire MiB ${CODEC} (${BATCH})`, 'wire MiB deflate-1', 'raw/ideal',
  `${CODEC}/casync`, 'deflate-1/casync', 'raw/casync raw'], [
  ...ours.map((r) => [`ours ${r.chunker} ${r.chunkSize / 1024}K`, r.blocks, fmtMiB(r.bytes), fmtMiB(r.batchWireBytes),
    fmtMiB(r.wireBytes), r.bytesVsIdeal.toFixed(2), r.batchWireVsCasync.toFixed(2), r.wireVsCasync.toFixed(2),
    r.bytesVsCasyncRaw.toFixed(2)]),
  ...casync.map((r) => [`casync ${r.label} (${r.chunkSizeMin / 1024}/${r.chunkSizeAvg / 1024}/${r.chunkSizeMax / 1024}K)`,
    r.chunks, fmtMiB(r.rawBytes), fmtMiB(r.wireBytes), '', r.bytesVsIdeal.toFixed(2), '', '', '']),
  ['4 KiB dedup ideal', ideal.blocks, fmtMiB(ideal.bytes), '', '', '1.00', '', '', ''],
]);
let bestWire = null;
if (ours.length) {
  bestWire = ours.reduce((a, b) => (b.batchWireBytes < a.batchWireBytes ? b : a));
  log(`best wire: ${bestWire.chunker} ${bestWire.chunkSize}: ${fmtMiB(bestWire.batchWireBytes)} MiB ${CODEC} = ` +
    `${bestWire.batchWireVsCasync.toFixed(2)} x casync (goal <= 0.8); DEFLATE-1 ${bestWire.wireVsCasync.toFixed(2)} x`);
}

console.log(JSON.stringify({
  bench: 'update-bytes', old: v1, new: v2, oldSize: fileSize(v1), newSize: fileSize(v2),
  machine: machine(), loadavgAtStart, loadavgAtEnd: loadavg().map((x) => round(x, 2)),
  ideal: { blockSize: 4096, blocks: ideal.blocks, bytes: ideal.bytes, v1DistinctNonZeroBlocks: ideal.oldDistinctNonZero,
    v2Blocks: ideal.newBlocks, v2ZeroBlocks: ideal.newZeroBlocks },
  ours, casync,
  best: bestWire && { chunker: bestWire.chunker, chunkSize: bestWire.chunkSize, codec: CODEC, batch: BATCH,
    batchWireBytes: bestWire.batchWireBytes, batchWireVsCasync: bestWire.batchWireVsCasync,
    deflate1WireBytes: bestWire.wireBytes, deflate1WireVsCasync: bestWire.wireVsCasync },
}));
