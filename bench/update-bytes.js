#!/usr/bin/env node
// Update bytes: what a host holding update-v1.img must fetch to get update-v2.img (a Debian point
// update + kernel ABI bump done in place; see scripts/fixtures/make-images.sh), for each chunker
// configuration, against casync and against the 4 KiB-dedup ideal, all in the same run.
//
//   node bench/update-bytes.js [--old PATH --new PATH] [--configs fixed:16384,fastcdc:65536,...]
//                              [--baseline-only] [--no-casync16] [--batch 32] [--codecs [--codec-passes 3]]
//
// ours:   fresh data dir per config; import v1, import v2, `diff v1 v2` -> bytes (raw), wireBytes
//         (DEFLATE-1 per block, as `diff` reports it). Then batchWireBytes: the same blocks read from
//         the store and encoded with the exchange codec `zstd-batch` (src/net/exchange/codec.ts) the
//         way a transfer sends them: interior nodes first, then leaves, each in DAG order, in batches
//         of --batch blocks (default 32, at most 1 MiB raw), one payload per batch, headers included.
// --codecs: also compare wire codecs on the first config's diff blocks (same order and batches):
//         DEFLATE, brotli and zstd, per block and per batch, compressing and decompressing each batch
//         with every codec in turn (starting at a different codec each batch), so that their MiB/s (of
//         raw bytes, one core) share the machine's load; --codec-passes passes, each codec's fastest
//         pass kept; speeds are also given relative to DEFLATE-1 per block (the first row).
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
const compareCodecs = Boolean(args.codecs);
const codecPasses = Number(args['codec-passes'] ?? 3);
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
async function batchWire(data, v1Root, v2Root, keepGroups = false) {
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
    const groups = [];
    const flush = () => {
      if (group.length === 0) return;
      bytes += codec.encode(group).length;
      batches++;
      if (keepGroups) groups.push(group);
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
    return { bytes, batches, groups };
  } finally { await store.close(); }
}

const ours = [];
let codecGroups = null;
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
      const bw = await batchWire(data, a.result.root, b.result.root, compareCodecs && ours.length === 0);
      if (bw.groups.length > 0) codecGroups = bw.groups;
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

// ---- codecs ----
async function runCodecs(groups) {
  const zlib = await import('node:zlib');
  const { createRequire } = await import('node:module');
  const { getCodec } = await import('../dist/net/exchange/codec.js');
  const { Encoder, Decoder } = createRequire(import.meta.url)('@toondepauw/node-zstd');
  const Z = zlib.constants;
  // The exchange's rule for DEFLATE-1 (src/dag/wire.ts): a block whose first 1 KiB has > 7.2 bits/byte goes as is.
  const incompressible = (b) => {
    if (b.length < 4096) return false;
    const counts = new Uint32Array(256);
    for (let i = 0; i < 1024; i++) counts[b[i]]++;
    let bits = 0;
    for (const c of counts) if (c) bits -= c * Math.log2(c / 1024);
    return bits / 1024 > 7.2;
  };
  const deflate = (level) => ({ c: (b) => zlib.deflateRawSync(b, { level }), d: (b, n) => zlib.inflateRawSync(b, { maxOutputLength: n }) });
  const brotli = (q, lgwin) => ({
    c: (b) => zlib.brotliCompressSync(b, { params: { [Z.BROTLI_PARAM_QUALITY]: q, [Z.BROTLI_PARAM_LGWIN]: lgwin, [Z.BROTLI_PARAM_SIZE_HINT]: b.length } }),
    d: (b, n) => zlib.brotliDecompressSync(b, { maxOutputLength: n }),
  });
  const zstd = (level) => { const e = new Encoder(level); const d = new Decoder(); return { c: (b) => e.encodeSync(b), d: (b) => d.decodeSync(b) }; };
  const specs = [
    ['DEFLATE-1 per block (today)', deflate(1), false, true],
    ['DEFLATE-6 per block', deflate(6), false, true],
    ['DEFLATE-1 per batch', deflate(1), true, true],
    ['DEFLATE-6 per batch', deflate(6), true, true],
    ['brotli q1 per block (lgwin 16)', brotli(1, 16), false, true],
    ['brotli q3 per block (lgwin 16)', brotli(3, 16), false, true],
    ['brotli q5 per block (lgwin 16)', brotli(5, 16), false, true],
    ['brotli q1 per batch (lgwin 20)', brotli(1, 20), true, true],
    ['brotli q2 per batch (lgwin 20)', brotli(2, 20), true, true],
    ['brotli q3 per batch (lgwin 20)', brotli(3, 20), true, true],
    ['brotli q4 per batch (lgwin 20)', brotli(4, 20), true, true],
    ['brotli q5 per batch (lgwin 20)', brotli(5, 20), true, true],
    ['zstd 1 per block', zstd(1), false, false],
    ['zstd 3 per block', zstd(3), false, false],
    ['zstd 6 per block', zstd(6), false, false],
    ['zstd 1 per batch', zstd(1), true, false],
    ['zstd 3 per batch', zstd(3), true, false],
    ['zstd 5 per batch', zstd(5), true, false],
  ].map(([name, codec, batch, skip]) => ({ name, codec, batch, skip, wire: 0, c: 0, d: 0 }));
  for (const name of ['zstd-batch', 'deflate-1']) {
    const codec = getCodec(name);
    specs.push({ name: `codec.ts ${name} (payloads)`, module: codec, wire: 0, c: 0, d: 0 });
  }
  const pass = () => {
    let raw = 0;
    const t = specs.map(() => ({ c: 0, d: 0, wire: 0 }));
    groups.forEach((group, gi) => {
      const groupBytes = group.reduce((n, b) => n + b.length, 0);
      raw += groupBytes;
      for (let k = 0; k < specs.length; k++) {
        const i = (gi + k) % specs.length;
        const sp = specs[i];
        const r = t[i];
        if (sp.module) {
          let t0 = performance.now();
          const payload = sp.module.encode(group);
          r.c += performance.now() - t0;
          t0 = performance.now();
          sp.module.decode(payload, groupBytes);
          r.d += performance.now() - t0;
          r.wire += payload.length;
          continue;
        }
        let t0 = performance.now();
        const kept = sp.skip ? group.filter((b) => !incompressible(b)) : group;
        let units = kept;
        if (sp.batch && kept.length > 0) units = [kept.length === 1 ? kept[0] : Buffer.concat(kept)];
        let wire = groupBytes - units.reduce((n, u) => n + u.length, 0);
        const outs = [];
        for (const u of units) {
          const out = sp.codec.c(u);
          if (out.length < u.length) { outs.push([out, u.length]); wire += out.length; } else wire += u.length;
        }
        r.c += performance.now() - t0;
        t0 = performance.now();
        for (const [out, n] of outs) sp.codec.d(out, n);
        r.d += performance.now() - t0;
        r.wire += wire;
      }
    });
    return { raw, t };
  };
  let raw = 0;
  for (let p = 0; p < codecPasses; p++) {
    const result = pass();
    raw = result.raw;
    specs.forEach((sp, i) => {
      const r = result.t[i];
      sp.wire = r.wire;
      sp.c = p === 0 ? r.c : Math.min(sp.c, r.c);
      sp.d = p === 0 ? r.d : Math.min(sp.d, r.d);
    });
    log(`pass ${p + 1}/${codecPasses} done`);
  }
  const ref = specs[0];
  return specs.map((sp) => ({
    codec: sp.name, wireBytes: sp.wire, ofRaw: round(sp.wire / raw, 4),
    compressMiBs: round(raw / MIB_ / (sp.c / 1000), 0), decompressMiBs: round(raw / MIB_ / (sp.d / 1000), 0),
    compressVsDeflate1: round(ref.c / sp.c, 2), decompressVsDeflate1: round(ref.d / sp.d, 2),
  }));
}
const MIB_ = 1024 * 1024;
let codecs = null;
if (codecGroups) {
  log('');
  log(`comparing codecs on ${codecGroups.length} batches, ${codecPasses} passes`);
  t0 = performance.now();
  codecs = await runCodecs(codecGroups);
  log(`(${((performance.now() - t0) / 1000).toFixed(0)} s)`);
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
if (codecs) {
  log('');
  log(`codecs on ${ours[0].chunker} ${ours[0].chunkSize / 1024}K's diff, batches of <= ${BATCH} blocks ` +
    `(MiB/s of raw bytes, one core, fastest of ${codecPasses} passes)`);
  table(['codec', 'wire MiB', 'of raw', 'compress MiB/s', 'x DEFLATE-1', 'decompress MiB/s', 'x DEFLATE-1'],
    codecs.map((c) => [c.codec, fmtMiB(c.wireBytes), `${(c.ofRaw * 100).toFixed(1)} %`, c.compressMiBs,
      c.compressVsDeflate1.toFixed(2), c.decompressMiBs, c.decompressVsDeflate1.toFixed(2)]));
}
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
  ours, casync, codecs, codecPasses: codecs ? codecPasses : undefined,
  best: bestWire && { chunker: bestWire.chunker, chunkSize: bestWire.chunkSize, codec: CODEC, batch: BATCH,
    batchWireBytes: bestWire.batchWireBytes, batchWireVsCasync: bestWire.batchWireVsCasync,
    deflate1WireBytes: bestWire.wireBytes, deflate1WireVsCasync: bestWire.wireVsCasync },
}));
