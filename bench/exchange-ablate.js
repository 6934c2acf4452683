#!/usr/bin/env node
// What a pull's time is made of (issue 4, the exchange goal): fresh `bench/exchange-peer.js` pulls
// of one image over loopback, with parts of the receiver's work taken out of a copy of dist/. The
// copies live in a temp dir; the product is never changed. Each round runs the raw libp2p stream
// (bench/raw-stream-peer.js, the exchange bench's ceiling) and then every variant, in an order that
// rotates from round to round (the machine's speed drifts within minutes).
//
//   node bench/exchange-ablate.js [--size-mib 1024] [--rounds 4] [--variants NAME,NAME...] [--floor [--floor-window BYTES]] [--perf] [--keep]
//
// Variants (each a one-line patch of the compiled JS; the bench stops if a patch no longer applies):
//   as built       nothing taken out
//   no hash        verifyBlock returns true in the pulling process (the sender still hashes)
//   no store       the pull's putMany calls ({fresh: true}) return at once: no pack write, no index,
//                  no commit
//   neither        both
// and, with --variants, what the sender does too: "no hash either side" (verifyBlock returns true in
// the serving process as well), "protocol only" (that, and no store on the pulling side: what is
// left is reading the blocks, the protocol, noise, yamux and the sockets);
// and, with --variants, parts of the store and of the session: "no pack write" (records queued,
// never copied or written), "no index" (a commit writes no index entries and caches no locations),
// "no sync" (a commit does not fdatasync the pack), "no presence check" (putMany of a pull's blocks
// looks for none in memory), "no location cache" (nothing is remembered), "flush 1 MiB" (the
// session hands the store 1 MiB at a time, not 256 KiB), "held until written" (a pull's blocks are
// not handed over to the store: the session and the store hold them until their write lands, as
// before 6e54b5e); and "worker hash", a measure-only prototype of hashing off the event loop (see
// PATCHES.worker). The default is the first four.
// --floor: each round also runs "the floor", the raw stream carrying the work every pull must do and
// no block protocol (bench/raw-stream-peer.js --block-bytes: the sender hashes every block before
// sending it; the receiver cuts the stream into blocks of the image's mean block size, hashes each
// into its CID and puts them into a real store, committing as a pull does). A pull can be no faster
// than the floor: its ratio to the raw stream is the most any block protocol could reach here.
// Its streams let the sender run at most --floor-window bytes ahead (default 4 MiB; a pull's own
// window is at most 8 MiB): with yamux's 16 MiB every floor ran a GC storm (docs/benchmarks.md).
// Prints, per variant, the median pull time, its ratio to the median raw stream, and the pulling
// process's median CPU (all threads); the last line is JSON.
//
// --perf: every pull and raw stream is recorded with `perf record -a` (Linux perf, root), and the
// bench prints where each side's CPU went, in seconds per run: the event loop's thread and the
// process's other threads (V8's workers: optimizing compiles, GC; the libuv pool), by what ran
// (noise's ChaCha20-Poly1305, BLAKE3, memcpy, malloc, the kernel, V8's builtins and runtime, JIT
// code, GC, the optimizing compiler). The recording adds a few per cent to every pull alike.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, cliAvailable, fmtMiB, log, machine, MIB, parseArgs, parseNdjson, rmrf, round, run, ROOT, sync, table,
  warm, warmTree } from './lib.js';
import { benchScope, makeImage, Proc, rawStreamRun } from './swarm-lib.js';

const args = parseArgs();
const sizeMiB = Number(args['size-mib'] ?? 1024);
const rounds = Math.max(1, Number(args.rounds ?? 4));

const PATCHES = {
  hash: {
    file: 'dist/dag/hash.js',
    after: 'export function verifyBlock(cid, bytes) {',
    insert: "    if (process.argv[2] === 'pull') return true; // bench/exchange-ablate.js"
  },
  serveHash: {
    file: 'dist/dag/hash.js',
    after: 'export function verifyBlock(cid, bytes) {',
    insert: "    if (process.argv[2] === 'serve') return true; // bench/exchange-ablate.js"
  },
  store: {
    file: 'dist/store/blockstore.js',
    after: 'async putMany(blocks, options = {}) {',
    insert: '        if (options.fresh === true) return { stored: blocks.length, bytes: 0 }; // bench/exchange-ablate.js'
  },
  write: {
    file: 'dist/store/packs.js',
    after: 'async writeAt(queue, position) {',
    insert: '        return; // bench/exchange-ablate.js'
  },
  index: {
    file: 'dist/store/blockstore.js',
    after: 'await writer.datasync();',
    insert: '            entries.clear(); // bench/exchange-ablate.js'
  },
  sync: {
    file: 'dist/store/packs.js',
    after: 'async datasync() {',
    insert: '        return; // bench/exchange-ablate.js'
  },
  present: {
    file: 'dist/store/blockstore.js',
    after: 'async present(ids, keys, memoryOnly) {',
    insert: '        if (memoryOnly) return new Array(ids.length).fill(false); // bench/exchange-ablate.js'
  },
  remember: {
    file: 'dist/store/blockstore.js',
    after: '    remember(id, entry, generation) {',
    insert: '        return; // bench/exchange-ablate.js'
  },
  // A prototype of hashing off the event loop (measure-only: verdicts are counted, not acted on):
  // the direct-write buffers in a SharedArrayBuffer, the receiver's hashing removed, and a worker
  // thread hashing each whole record staged in a buffer when that buffer is written.
  worker: [
    { file: 'dist/net/exchange/session.js', find: '!verifyBlock(this.cidOf(item), bytes)', replace: 'false' },
    { file: 'dist/store/direct.js', find: 'const raw = Buffer.allocUnsafeSlow(size + DIRECT_UNIT);', replace: 'const raw = Buffer.from(new SharedArrayBuffer(size + DIRECT_UNIT));' },
    {
      file: 'dist/store/direct.js',
      after: "import { join } from 'node:path';",
      insert: `import { Worker } from 'node:worker_threads';
let ablateWorker;
function hashWorker() {
  if (ablateWorker == null) {
    ablateWorker = new Worker(\`const { parentPort } = require('node:worker_threads'); const { blake3UrlSafeBase64 } = require('@napi-rs/blake-hash');
parentPort.on('message', ({ sab, off, recs }) => {
  const u = new Uint8Array(sab, off);
  for (const r of recs) {
    const len = ((u[r] << 24) >>> 0) + (u[r + 1] << 16) + (u[r + 2] << 8) + u[r + 3];
    blake3UrlSafeBase64(u.subarray(r + 41, r + 41 + len)).startsWith(Buffer.from(u.subarray(r + 9, r + 41)).toString('base64url'));
  }
});\`, { eval: true });
    ablateWorker.unref();
  }
  return ablateWorker;
}`
    },
    {
      file: 'dist/store/direct.js',
      after: 'const n = Math.min(piece.length - this.pendingAt, buf.length - this.used);',
      insert: `            if (n === piece.length && this.pendingAt === 0) {
                if (piece.length === 41 && piece[4] === 36) this.ablateHeader = this.used;
                else if (this.ablateHeader !== undefined && this.ablateHeader + 41 === this.used) { (this.ablateRecords ??= [[], []])[this.cur].push(this.ablateHeader); this.ablateHeader = undefined; }
                else this.ablateHeader = undefined;
            } else this.ablateHeader = undefined;`
    },
    {
      // Records go to the worker 16 at a time as they are staged, before their buffer is written:
      // read while a direct write of the same pages is in flight, they cost the worker ~20x more
      // on this VM (6.3-6.6 CPU-s per GiB, against 0.5-0.8 s).
      file: 'dist/store/direct.js',
      find: '            this.pendingIndex = 0;\n        }\n    }\n',
      replace: `            this.pendingIndex = 0;
        }
        const staged = this.ablateRecords?.[this.cur];
        if (staged?.length >= 16) { hashWorker().postMessage({ sab: buf.buffer, off: buf.byteOffset, recs: staged }); this.ablateRecords[this.cur] = []; }
    }
`
    },
    {
      file: 'dist/store/direct.js',
      find: '        const length = this.direct ? Math.ceil(this.used / DIRECT_UNIT) * DIRECT_UNIT : this.used;',
      replace: `        const records = this.ablateRecords?.[this.cur];
        if (records?.length) { hashWorker().postMessage({ sab: buf.buffer, off: buf.byteOffset, recs: records }); this.ablateRecords[this.cur] = []; }
        this.ablateHeader = undefined;
        const length = this.direct ? Math.ceil(this.used / DIRECT_UNIT) * DIRECT_UNIT : this.used;`
    }
  ],
  held: {
    file: 'dist/net/exchange/session.js',
    find: 'handOver: true',
    replace: 'handOver: false'
  },
  flush1m: {
    file: 'dist/net/exchange/session.js',
    find: 'const FLUSH_BYTES = 256 * 1024;',
    replace: 'const FLUSH_BYTES = 1024 * 1024;'
  }
};
const ALL = [
  { name: 'as built', patches: [] },
  { name: 'no hash', patches: ['hash'] },
  { name: 'no store', patches: ['store'] },
  { name: 'neither', patches: ['hash', 'store'] },
  { name: 'no hash either side', patches: ['hash', 'serveHash'] },
  { name: 'protocol only', patches: ['hash', 'serveHash', 'store'] },
  { name: 'no pack write', patches: ['write'] },
  { name: 'no index', patches: ['index'] },
  { name: 'no sync', patches: ['sync'] },
  { name: 'flush 1 MiB', patches: ['flush1m'] },
  { name: 'no presence check', patches: ['present'] },
  { name: 'no location cache', patches: ['remember'] },
  { name: 'worker hash', patches: ['worker'] },
  { name: 'held until written', patches: ['held'] }
];
const VARIANTS = args.variants == null
  ? ALL.slice(0, 4)
  : String(args.variants).split(',').map((name) => ALL.find((v) => v.name === name.trim()) ?? (() => { throw new Error(`no variant "${name}"`); })());

const perf = Boolean(args.perf);
const floorOn = Boolean(args.floor);
const floorWindow = Number(args['floor-window'] ?? 4 * 1024 * 1024);
if (perf && spawnSync('perf', ['--version']).status !== 0) {
  console.error('--perf needs Linux perf (apt-get install linux-perf) and the right to record every CPU (root)');
  process.exit(2);
}

const a = await cliAvailable();
if (!a.ok) {
  console.error(`collective-peer CLI not usable (${a.why}); build it first (npm run build)`);
  process.exit(2);
}

const { dir, track, cleanup } = benchScope('exchange-ablate', { keep: Boolean(args.keep) });

/** A copy of the project's dist/ and bench/ with `patches` applied; its node_modules is the project's. */
function variantTree (variant) {
  const tree = join(dir, `v-${variant.name.replace(/\W+/g, '-')}`);
  mkdirSync(tree, { recursive: true });
  for (const part of ['dist', 'bench', 'package.json']) cpSync(join(ROOT, part), join(tree, part), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
  for (const { file, after, insert, find, replace, name } of variant.patches.flatMap((name) => [PATCHES[name]].flat().map((p) => ({ ...p, name })))) {
    const path = join(tree, file);
    const text = readFileSync(path, 'utf8');
    const marker = after ?? find;
    const at = text.indexOf(marker);
    if (at < 0 || text.indexOf(marker, at + 1) >= 0) throw new Error(`patch "${name}": ${file} has no single "${marker}" any more`);
    writeFileSync(path, after != null
      ? text.slice(0, at + after.length) + '\n' + insert + text.slice(at + after.length)
      : text.slice(0, at) + replace + text.slice(at + find.length));
  }
  return tree;
}

/** What a perf sample ran, from its symbol and object (perf script's sym and dso). */
function category (sym, dso) {
  if (dso.includes('kernel')) return 'kernel';
  if (/ChaCha|poly1305|OPENSSL|EVP_|CRYPTO_|ossl_|aes/i.test(sym) || dso.includes('libcrypto')) return 'ChaCha20-Poly1305 (noise)';
  if (/blake3/i.test(sym) || dso.includes('blake')) return 'BLAKE3';
  if (/memmove|memcpy|memset/.test(sym)) return 'memcpy, memset';
  if (/malloc|free\b|cfree|_int_|unlink_chunk|_mi_|calloc|realloc|consolidate/.test(sym)) return 'malloc, free';
  if (/compiler::|Turbofan|Maglev|Pipeline|Zone|OptimizedCompilationJob|Compile/.test(sym)) return 'V8 optimizing compiler';
  if (/Scaveng|Marking|MarkCompact|Sweep|Evacuat|ArrayBufferSweeper|Heap::|RememberedSet|SlotSet|ConcurrentMarking|heap::base/.test(sym)) return 'V8 GC';
  if (/leveldb|snappy/i.test(sym) || dso.includes('classic-level')) return 'LevelDB';
  if (/^Builtins_/.test(sym)) return 'V8 builtins';
  if (/v8::|node::|uv_|uv__|std::|napi_/.test(sym)) return 'V8 and Node runtime';
  if (sym === '[unknown]' || sym === '') return 'JIT code';
  return 'other';
}

/** Starts `perf record` on every CPU; perfStop ends it. */
function perfStart (file) {
  return spawn('perf', ['record', '-a', '-F', '999', '-o', file, '--', 'sleep', '3600'], { stdio: 'ignore' });
}

async function perfStop (p) {
  const exited = once(p, 'exit');
  p.kill('SIGINT');
  await exited;
}

/**
 * CPU seconds by side ('receiver' is the busiest node process other than the server and this
 * bench), thread ('event loop' is the process's first thread) and category.
 */
function perfBreakdown (file, serverPid) {
  const r = spawnSync('perf', ['script', '-i', file, '-F', 'pid,tid,ip,sym,dso'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`perf script failed: ${r.stderr}`);
  const byPid = new Map();
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*(\d+)\/(\d+)\s+[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$/.exec(line);
    if (m == null || m[1] === '0') continue;
    const [, pid, tid, sym, dso] = m;
    if (!byPid.has(pid)) byPid.set(pid, new Map());
    const key = `${pid === tid ? 'event loop' : 'other threads'}|${category(sym, dso)}`;
    const counts = byPid.get(pid);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const total = (counts) => [...counts.values()].reduce((x, y) => x + y, 0);
  const sender = byPid.get(String(serverPid)) ?? new Map();
  const receiver = [...byPid].filter(([pid]) => pid !== String(serverPid) && pid !== String(process.pid))
    .map(([, counts]) => counts).sort((x, y) => total(y) - total(x))[0] ?? new Map();
  const seconds = (counts) => Object.fromEntries([...counts].map(([k, n]) => [k, n / 999]));
  return { receiver: seconds(receiver), sender: seconds(sender) };
}

/** Adds `b`'s seconds into `a`. */
function addInto (a, b) {
  for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
}

/** Runs `job` (a pull against the server `serverPid`), under perf with --perf, adding its breakdown into `into`. */
async function recorded (into, serverPid, job) {
  if (!perf) return await job();
  const file = join(dir, 'perf.data');
  const recording = perfStart(file);
  const result = await job();
  await perfStop(recording);
  const b = perfBreakdown(file, serverPid);
  addInto(into.receiver, b.receiver);
  addInto(into.sender, b.sender);
  return result;
}

/** Prints the mean breakdown of each pull kind, per side and thread. */
function printBreakdowns (kinds, n) {
  for (const side of ['receiver', 'sender']) {
    for (const thread of ['event loop', 'other threads']) {
      const keys = new Set(kinds.flatMap(({ cpu }) => Object.keys(cpu[side]).filter((k) => k.startsWith(thread + '|'))));
      const rows = [...keys].map((k) => [k.split('|')[1], ...kinds.map(({ cpu }) => (cpu[side][k] ?? 0) / n)])
        .sort((x, y) => y[1] - x[1]);
      rows.push(['total', ...kinds.map(({ cpu }) => Object.entries(cpu[side]).filter(([k]) => k.startsWith(thread + '|')).reduce((t, [, v]) => t + v, 0) / n)]);
      log('');
      log(`${side}, ${thread}: CPU seconds per run (perf)`);
      table(['what ran', ...kinds.map(({ name }) => name)], rows.map(([what, ...xs]) => [what, ...xs.map((x) => x.toFixed(2))]));
    }
  }
}

const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

try {
  const image = join(dir, 'image.raw');
  const bytes = sizeMiB * MIB;
  makeImage(image, bytes, {});
  const dataA = join(dir, 'a');
  const imp = await cli(dataA, ['import', image]);
  const root = imp.result.root;
  log(`image ${sizeMiB} MiB (random), imported into A: ${root}, ${imp.result.blocks} blocks, ${fmtMiB(imp.result.bytesStored)} MiB`);
  warm(image);
  warmTree(join(dataA, 'store'));
  sync();
  const trees = VARIANTS.map((v) => ({ ...v, tree: variantTree(v), seconds: [], cpu: [], breakdown: { receiver: {}, sender: {} } }));
  const raw = [];
  const rawCpu = { receiver: {}, sender: {} };
  const floor = [];
  const floorCpu = { receiver: {}, sender: {} };
  const blockBytes = Math.round(bytes / imp.result.blocks);
  /** One raw stream (`floorRun`: the floor), recorded into `into` with --perf. */
  const rawStream = async (into, floorRun) => (await rawStreamRun({ image, bytes, track,
    floor: floorRun ? { blockBytes, streamWindow: floorWindow, storeDir: join(dir, 'floor') } : undefined,
    around: (pid, job) => recorded(into, pid, job) })).streams[0];
  for (let i = 0; i < rounds; i++) {
    {
      const res = await rawStream(rawCpu, false);
      raw.push(res.seconds);
      log(`round ${i + 1}: raw stream ${res.seconds.toFixed(2)} s (receiver ${res.majorGcs} full GCs)`);
    }
    if (floorOn) {
      const res = await rawStream(floorCpu, true);
      floor.push(res.seconds);
      log(`round ${i + 1}: the floor  ${res.seconds.toFixed(2)} s (raw + hashing on both sides + the store; receiver ${res.majorGcs} full GCs)`);
    }
    for (let k = 0; k < trees.length; k++) {
      const v = trees[(i + k) % trees.length];
      const peer = join(v.tree, 'bench', 'exchange-peer.js');
      const dataB = join(dir, 'b');
      const server = track(new Proc(process.execPath, [peer, 'serve', '--data-dir', dataA, '--root', root], { name: `${v.name} serve` }));
      const ready = await server.waitFor((e) => e.type === 'ready', { what: 'ready' });
      const addr = ready.addresses.find((x) => x.startsWith('/ip4/127.0.0.1/'));
      const r = await recorded(v.breakdown, server.pid,
        () => run(process.execPath, [peer, 'pull', '--data-dir', dataB, '--peer', addr, '--root', root], { timeoutMs: 10 * 60_000 }));
      await server.stop();
      rmrf(dataB);
      const res = parseNdjson(r.stdout).pop();
      if (res?.size !== bytes) throw new Error(`${v.name}: exchange-peer pull returned ${JSON.stringify(res)}`);
      v.seconds.push(res.seconds);
      v.cpu.push(res.cpuSeconds);
      log(`round ${i + 1}: ${v.name.padEnd(13)} ${res.seconds.toFixed(2)} s (receiver CPU ${res.cpuSeconds.toFixed(1)} s, ${res.fullGcs} full GCs)`);
    }
  }
  const rawMedian = median(raw);
  log('');
  table(['pull', 'median s', 'fastest s', 'raw / pull', 'receiver CPU s'], [
    ['raw libp2p stream', rawMedian.toFixed(2), Math.min(...raw).toFixed(2), '', ''],
    ...(floorOn ? [[`the floor (raw + hashing + store, ${blockBytes} B blocks)`, median(floor).toFixed(2), Math.min(...floor).toFixed(2),
      `${Math.round(100 * rawMedian / median(floor))} %`, '']] : []),
    ...trees.map((v) => [v.name, median(v.seconds).toFixed(2), Math.min(...v.seconds).toFixed(2),
      `${Math.round(100 * rawMedian / median(v.seconds))} %`, median(v.cpu).toFixed(1)])
  ]);
  if (floorOn) {
    log(`each pull against the floor (median / median): ${trees.map((v) => `${v.name} ${Math.round(100 * median(floor) / median(v.seconds))} %`).join(', ')}`);
  }
  if (perf) printBreakdowns([{ name: 'raw stream', cpu: rawCpu }, ...(floorOn ? [{ name: 'the floor', cpu: floorCpu }] : []), ...trees.map((v) => ({ name: v.name, cpu: v.breakdown }))], rounds);
  console.log(JSON.stringify({
    bench: 'exchange-ablate', bytes, rounds, root, machine: machine(),
    raw: { seconds: raw.map((x) => round(x)) },
    ...(floorOn ? { floor: { blockBytes, streamWindow: floorWindow, seconds: floor.map((x) => round(x)) } } : {}),
    variants: trees.map((v) => ({ name: v.name, patches: v.patches, seconds: v.seconds.map((x) => round(x)), cpuSeconds: v.cpu.map((x) => round(x, 2)),
      ...(perf ? { perfSeconds: v.breakdown } : {}) })),
    ...(perf ? { rawPerfSeconds: rawCpu } : {})
  }));
} finally {
  await cleanup();
}
