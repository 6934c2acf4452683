// Shared helpers for the bench scripts: fixtures, subprocesses (the CLI, casync), timing, peak RSS,
// casync stores and indexes, 4 KiB block hashing, table printing.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, closeSync, readSync, readFileSync, readdirSync, lstatSync,
  rmSync, statSync, mkdirSync } from 'node:fs';
import { cpus as osCpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = join(ROOT, 'bin', 'collective-peer.js');
export const FIXTURES_DIR = process.env.FIXTURES_DIR ?? join(ROOT, '.cache', 'fixtures');
export const MIB = 1024 * 1024;

/** Parse `--name value` / `--flag` arguments into an object (values stay strings). */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument: ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[a.slice(2)] = argv[++i];
    else out[a.slice(2)] = true;
  }
  return out;
}

export const log = (...a) => console.log(...a);

/** The fixture image paths; builds them with scripts/fixtures/make-images.sh if any is missing. */
export function ensureFixtures() {
  const p = {
    bench: join(FIXTURES_DIR, 'bench-2g.img'),
    v1: join(FIXTURES_DIR, 'update-v1.img'),
    v2: join(FIXTURES_DIR, 'update-v2.img'),
  };
  if (!Object.values(p).every((f) => existsSync(f))) {
    log('fixtures missing: running scripts/fixtures/make-images.sh (a few minutes, downloads ~350 MB)');
    const r = spawnSync('bash', [join(ROOT, 'scripts', 'fixtures', 'make-images.sh')], {
      stdio: ['ignore', 'ignore', 'inherit'], timeout: 45 * 60_000,
      env: { ...process.env, FIXTURES_DIR },
    });
    if (r.status !== 0) throw new Error(`make-images.sh failed (status ${r.status}, signal ${r.signal})`);
  }
  return p;
}

/**
 * Run a command, capture stdout/stderr, measure wall time and (via /usr/bin/time) peak RSS.
 * Resolves {code, stdout, stderr, seconds, peakRssKiB}; rejects on a non-zero exit unless allowFail.
 */
export function run(cmd, args, { timeoutMs = 30 * 60_000, env, cwd = ROOT, allowFail = false, measureRss = true } = {}) {
  const useTime = measureRss && existsSync('/usr/bin/time');
  let rssFile;
  let argv = [cmd, ...args];
  if (useTime) {
    rssFile = join(mkdtempSync(join(tmpdir(), 'cp-bench-time-')), 'rss');
    argv = ['/usr/bin/time', '-o', rssFile, '-f', '%M', ...argv];
  }
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(argv[0], argv.slice(1), { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pollPeak = 0;
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    // Fallback when /usr/bin/time is missing: poll the child's VmHWM.
    const poll = measureRss && !useTime ? setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) pollPeak = Math.max(pollPeak, Number(m[1]));
      } catch { /* exited */ }
    }, 50) : null;
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); if (poll) clearInterval(poll); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      let peakRssKiB = pollPeak || null;
      if (useTime) {
        try {
          const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
          peakRssKiB = Number(lines[lines.length - 1]) || null;
        } catch { /* killed */ }
        rmSync(dirname(rssFile), { recursive: true, force: true });
      }
      const res = { code, signal, stdout, stderr, seconds, peakRssKiB };
      if ((code !== 0 || signal) && !allowFail) {
        const err = new Error(`${cmd} ${args.join(' ')} failed (code ${code}, signal ${signal}` +
          `${signal === 'SIGKILL' ? `, timeout ${timeoutMs} ms?` : ''}):\n${stderr.trim().split('\n').slice(-5).join('\n')}`);
        err.result = res;
        reject(err);
      } else resolvePromise(res);
    });
  });
}

/** Parse NDJSON; returns the array of objects (non-JSON lines ignored). */
export function parseNdjson(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try { out.push(JSON.parse(t)); } catch { /* not JSON */ }
  }
  return out;
}

/** `node bin/collective-peer.js --data-dir DIR <args...> --json`; returns {result, events, seconds, peakRssKiB}. */
export async function cli(dataDir, args, opts = {}) {
  const r = await run(process.execPath, [CLI, '--data-dir', dataDir, ...args, '--json'], opts);
  const events = parseNdjson(r.stdout);
  if (events.length === 0) throw new Error(`no JSON from: collective-peer ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
  return { result: events[events.length - 1], events, seconds: r.seconds, peakRssKiB: r.peakRssKiB };
}

/** Is the CLI usable? (bin exists and `--help` exits 0 within 30 s) */
export async function cliAvailable() {
  if (!existsSync(CLI)) return { ok: false, why: `${CLI} missing` };
  const r = await run(process.execPath, [CLI, '--help'], { allowFail: true, timeoutMs: 30_000, measureRss: false });
  return r.code === 0 ? { ok: true } : { ok: false, why: `--help exited ${r.code}: ${r.stderr.trim().split('\n').pop()}` };
}

export function tempDir(prefix) {
  const base = process.env.BENCH_TMP ?? tmpdir();
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, `cp-bench-${prefix}-`));
}
export const rmrf = (p) => rmSync(p, { recursive: true, force: true });

/** Read a file once so that the following runs read it from the page cache. */
export function warm(path) {
  const devnull = openSync('/dev/null', 'w');
  try {
    const r = spawnSync('cat', [path], { stdio: ['ignore', devnull, 'inherit'], timeout: 10 * 60_000 });
    if (r.status !== 0) throw new Error(`cat ${path} failed (status ${r.status})`);
  } finally { closeSync(devnull); }
}

/** Reads every file under dir (see warm): a store written with O_DIRECT is not in the page cache. */
export function warmTree(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) warmTree(path);
    else if (entry.isFile()) warm(path);
  }
}

/** Flush dirty pages so a previous run's writeback does not land in the next run's timing. */
export function sync() { spawnSync('sync', { stdio: 'ignore', timeout: 120_000 }); }

/** Total apparent size and count of the files under dir whose name ends with suffix (du -sb style). */
export function treeBytes(dir, suffix = '') {
  let bytes = 0;
  let files = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith(suffix)) { bytes += lstatSync(p).size; files++; }
    }
  };
  if (existsSync(dir)) walk(dir);
  return { bytes, files };
}

/** Set of chunk ids (hex) in a casync store. */
export function storeChunkIds(dir) {
  const ids = new Set();
  if (!existsSync(dir)) return ids;
  for (const sub of readdirSync(dir)) {
    for (const f of readdirSync(join(dir, sub))) if (f.endsWith('.cacnk')) ids.add(f.slice(0, -6));
  }
  return ids;
}

/**
 * Parse a casync blob index (.caibx): header (CaFormatIndex, 48 bytes), table header (16 bytes),
 * items {le64 end offset, 32-byte chunk id}, tail (40 bytes). Returns {chunkSizeMin/Avg/Max, chunks:[{id, size}]}.
 */
export function parseCaibx(path) {
  const d = readFileSync(path);
  const u64 = (o) => Number(d.readBigUInt64LE(o));
  if (u64(0) !== 48) throw new Error(`${path}: not a caibx (header size ${u64(0)})`);
  const tail = d.length - 40;
  if ((tail - 64) % 40 !== 0) throw new Error(`${path}: unexpected index length ${d.length}`);
  const chunks = [];
  let prev = 0;
  for (let o = 64; o < tail; o += 40) {
    const end = u64(o);
    chunks.push({ id: d.subarray(o + 8, o + 40).toString('hex'), size: end - prev });
    prev = end;
  }
  return { chunkSizeMin: u64(24), chunkSizeAvg: u64(32), chunkSizeMax: u64(40), size: prev, chunks };
}

/**
 * Hash every 4 KiB block of a file (holes read as zeros). Calls onBlock(keyString) for each non-zero
 * block; returns {blocks, zeroBlocks}. Keys are the first 16 bytes of SHA-256, base64 (collisions
 * are irrelevant at this scale).
 */
export function forEach4k(path, onBlock) {
  const BS = 4096;
  const buf = Buffer.allocUnsafe(8 * MIB);
  const zero = Buffer.alloc(BS);
  const fd = openSync(path, 'r');
  let pos = 0;
  let blocks = 0;
  let zeroBlocks = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      for (let o = 0; o < n; o += BS) {
        const b = buf.subarray(o, Math.min(o + BS, n));
        blocks++;
        if (b.length === BS ? b.equals(zero) : b.every((x) => x === 0)) { zeroBlocks++; continue; }
        onBlock(createHash('sha256').update(b).digest().subarray(0, 16).toString('base64'), b);
      }
      pos += n;
    }
  } finally { closeSync(fd); }
  return { blocks, zeroBlocks };
}

/**
 * The 4 KiB-dedup ideal: distinct non-zero 4 KiB blocks of newPath absent from oldPath's blocks.
 * Returns {blocks, bytes} (bytes = blocks × 4096) plus context counts.
 */
export function ideal4k(oldPath, newPath) {
  const have = new Set();
  const o = forEach4k(oldPath, (k) => { have.add(k); });
  const distinctOld = have.size;
  const fresh = new Set();
  const n = forEach4k(newPath, (k) => { if (!have.has(k)) fresh.add(k); });
  return {
    blocks: fresh.size, bytes: fresh.size * 4096,
    oldDistinctNonZero: distinctOld, oldZeroBlocks: o.zeroBlocks,
    newBlocks: n.blocks, newZeroBlocks: n.zeroBlocks,
  };
}

export const fileSize = (p) => statSync(p).size;
export const fmtMiB = (b) => (b / MIB).toFixed(1);
export const round = (x, d = 3) => (x == null || !Number.isFinite(x) ? null : Number(x.toFixed(d)));

/** Print rows (arrays of strings) as an aligned table. */
export function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c ?? '')));
  const w = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  log(line(all[0]));
  log(w.map((x) => '-'.repeat(x)).join('  '));
  for (const r of all.slice(1)) log(line(r));
}

/** Where the figures were measured. */
export function machine() {
  const cpus = osCpus();
  return { node: process.version, cpus: cpus.length, cpuModel: cpus[0]?.model ?? null,
    memGiB: round(totalmem() / 1024 ** 3, 1), kernel: release() };
}
