// Helpers for the swarm benches (exchange.js, fanout.js): generated images, long-running processes
// (host daemons, raw libp2p peers, HTTP servers) with NDJSON on stdout, clean stops.
import { spawn } from 'node:child_process';
import { closeSync, createWriteStream, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { CLI, MIB, parseNdjson, rmrf, ROOT, run, tempDir } from './lib.js';

/**
 * Writes an image of `bytes` bytes: random data (incompressible), except that a `compressible`
 * fraction of each 1 MiB is filled with repeated text (so DEFLATE on the wire has something to do
 * when asked). compressible = 0: every byte random.
 */
export function makeImage(path, bytes, { compressible = 0 } = {}) {
  const buf = Buffer.allocUnsafe(MIB);
  const text = Buffer.from('collective-peer bench filler: the quick brown fox jumps over the lazy dog\n');
  const textBytes = Math.floor(MIB * compressible);
  const fd = openSync(path, 'w');
  try {
    for (let done = 0; done < bytes; done += MIB) {
      randomFillSync(buf);
      for (let o = 0; o < textBytes; o += text.length) text.copy(buf, o, 0, Math.min(text.length, textBytes - o));
      const n = Math.min(MIB, bytes - done);
      writeSync(fd, buf, 0, n);
    }
  } finally { closeSync(fd); }
}

/**
 * A long-running child: collects stdout NDJSON events, keeps the stderr tail, can wait for an event.
 * `wrap` is a prefix command (e.g. ['ip', 'netns', 'exec', NS]).
 */
export class Proc {
  constructor(cmd, args, { env, wrap = [], name = cmd, stderrFile } = {}) {
    const argv = [...wrap, cmd, ...args];
    this.name = name;
    this.events = [];
    this.stderr = '';
    this.waiters = [];
    this.exited = false;
    this.child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    let partial = '';
    const log = stderrFile ? createWriteStream(stderrFile, { flags: 'a' }) : null;
    this.child.stdout.setEncoding('utf8').on('data', (d) => {
      partial += d;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl).trim();
        partial = partial.slice(nl + 1);
        // Not an event (e.g. node's --trace-gc): kept in the log file, if any.
        if (!line.startsWith('{')) { log?.write(`${line}\n`); continue; }
        let ev;
        try { ev = JSON.parse(line); } catch { continue; }
        this.events.push(ev);
        for (const w of [...this.waiters]) if (w.pred(ev)) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(ev); }
      }
    });
    this.child.stderr.setEncoding('utf8').on('data', (d) => { this.stderr = (this.stderr + d).slice(-8000); log?.write(d); });
    this.child.on('close', () => log?.end());
    this.closed = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.exited = true;
        this.exitCode = code;
        this.exitSignal = signal;
        for (const w of this.waiters) w.reject(new Error(`${this.name} exited (code ${code}, signal ${signal}) ` +
          `before ${w.what}:\n${this.stderr.trim().split('\n').slice(-6).join('\n')}`));
        this.waiters = [];
        resolve({ code, signal });
      });
    });
  }

  /** Resolves with the first event (past or future) that matches. */
  waitFor(pred, { timeoutMs = 60_000, what = 'the event' } = {}) {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.exited) return Promise.reject(new Error(`${this.name} already exited before ${what}`));
    return new Promise((resolve, reject) => {
      const w = { pred, what, resolve: (e) => { clearTimeout(t); resolve(e); }, reject: (e) => { clearTimeout(t); reject(e); } };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.name}: timeout waiting for ${what}:\n${this.stderr.trim().split('\n').slice(-6).join('\n')}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves once the process is gone. */
  async stop(graceMs = 20_000) {
    if (this.exited) return this.closed;
    try { this.child.kill('SIGTERM'); } catch { /* gone */ }
    const t = setTimeout(() => { try { this.child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
    const r = await this.closed;
    clearTimeout(t);
    return r;
  }
}

/**
 * A host daemon (`collective-peer --data-dir D --listen L --no-mdns [--bootstrap B]... --json`);
 * resolves once it printed daemon:ready, with {proc, peerId, addresses, p2p}. nodeArgs: flags for node (e.g. --cpu-prof).
 */
export async function startDaemon(dataDir, { listen = '/ip4/127.0.0.1/tcp/0', bootstrap = [], wrap = [], name = 'daemon', env, nodeArgs = [], stderrFile } = {}) {
  const args = [...nodeArgs, CLI, '--data-dir', dataDir, '--listen', listen, '--no-mdns', ...bootstrap.flatMap((b) => ['--bootstrap', b]), '--json'];
  const proc = new Proc(process.execPath, args, { wrap, name, env, stderrFile });
  const ready = await proc.waitFor((e) => e.type === 'daemon:ready', { timeoutMs: 60_000, what: 'daemon:ready' });
  return { proc, peerId: ready.peerId, addresses: ready.addresses, p2p: ready.addresses.find((a) => a.includes('/p2p/')) };
}

/** CPU seconds (user + system) a live process has used so far, from /proc/PID/stat (null once gone). */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch { return null; }
}

const RAW_PEER = join(ROOT, 'bench', 'raw-stream-peer.js');

/**
 * One run of bench/raw-stream-peer.js on loopback: a server process sending `image`, and a fetch
 * process reading `streams` streams of it in a row, each checked to deliver `bytes`. With `floor`
 * ({ blockBytes, streamWindow, storeDir }) the two run the floor (the sender hashes every block, the
 * fetch stores them in a fresh store at storeDir, removed afterwards). `around(serverPid, job)` wraps
 * the fetch (a CPU recording). Resolves to { streams: the fetch's result lines, senderCpuSeconds }.
 */
export async function rawStreamRun({ image, bytes, track, streams = 1, floor, around = (pid, job) => job() }) {
  const extra = floor != null ? ['--block-bytes', String(floor.blockBytes), '--stream-window', String(floor.streamWindow)] : [];
  const server = track(new Proc(process.execPath, [RAW_PEER, 'serve', '--file', image, ...extra], { name: floor != null ? 'floor serve' : 'raw serve' }));
  try {
    const ready = await server.waitFor((e) => e.type === 'ready', { what: 'ready' });
    const addr = ready.addresses.find((x) => x.startsWith('/ip4/127.0.0.1/'));
    const cpu0 = cpuSeconds(server.pid);
    const r = await around(server.pid, () => run(process.execPath,
      [RAW_PEER, 'fetch', '--peer', addr, '--streams', String(streams), ...(floor != null ? ['--store', floor.storeDir, ...extra] : [])],
      { timeoutMs: 10 * 60_000 }));
    const senderCpuSeconds = cpuSeconds(server.pid) - cpu0;
    const results = parseNdjson(r.stdout).filter((e) => e.stream != null);
    if (results.length !== streams || results.some((x) => x.bytes !== bytes)) {
      throw new Error(`raw-stream-peer fetch delivered ${JSON.stringify(results.map((x) => x.bytes))} bytes, expected ${streams} × ${bytes}: ${r.stderr}`);
    }
    return { streams: results, senderCpuSeconds };
  } finally {
    await server.stop();
    if (floor != null) rmrf(floor.storeDir);
  }
}

/**
 * Runs a CLI command inside a running daemon through its control socket (POST /run, what
 * `collective-peer` does when a daemon answers), from this process: no node process is started per
 * command. Resolves like lib.js `cli` ({ result, events, seconds }); rejects on a non-zero exit.
 */
export async function daemonCli(dataDir, args) {
  const { runInDaemon } = await import('../dist/daemon/control.js');
  let stdout = '';
  let stderr = '';
  const t0 = performance.now();
  const code = await runInDaemon(join(dataDir, 'control.sock'), { argv: ['--data-dir', dataDir, ...args, '--json'], cwd: process.cwd() },
    { stdout: { write: (c) => { stdout += c; return true; }, once: () => {} }, stderr: { write: (c) => { stderr += c; return true; }, once: () => {} } });
  const seconds = (performance.now() - t0) / 1000;
  const events = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  if (code !== 0 || events.length === 0) {
    const err = new Error(`collective-peer ${args.join(' ')} (in the daemon) exited ${code}: ${stderr.trim().split('\n').pop()}`);
    err.result = { code, stdout, stderr };
    throw err;
  }
  return { result: events[events.length - 1], events, seconds };
}

/**
 * A bench's temp dir and child processes: `track` each Proc; `cleanup` stops them and removes the
 * dir (kept with `keep`), and SIGINT/SIGTERM run it before exiting.
 */
export function benchScope(prefix, { keep = false } = {}) {
  const dir = tempDir(prefix);
  const procs = new Set();
  const track = (p) => { procs.add(p); p.closed.then(() => procs.delete(p)); return p; };
  const cleanup = async () => {
    await Promise.all([...procs].map((p) => p.stop(5_000)));
    if (!keep) rmrf(dir);
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { cleanup().finally(() => process.exit(130)); });
  return { dir, track, cleanup };
}
