#!/usr/bin/env node
// Fan-out: one publisher, N hosts pulling the same image at once over shaped links, against a
// single-source HTTP server under the same shaping, in the same run.
//
//   node bench/fanout.js [--hosts 4,8,16] [--size-mib N] [--rate-mbit R] [--compressible F]
//                        [--publisher-nice N] [--skip-http] [--warm] [--timeline[=S]] [--cpu-prof DIR] [--log-dir DIR]
//                        [--tcp-cc NAME] [--node-args="FLAGS"] [--keep]
//
// Network (needs root, iproute2, tc): a namespace per host and one for the publisher, each with a veth
// `eth0` whose peer sits in a bridge namespace on bridge br0; addresses 10.213.0.0/24 exist only
// inside these namespaces. Each veth is shaped in both directions to R Mbit/s (tbf on eth0's egress =
// the node's upload, tbf on the bridge-side peer's egress = its download); the publisher's link too.
// The namespaces are named cpfan-<pid>-*, and are deleted (with every process started) on exit,
// failure or signal; stale cpfan-* namespaces of dead runs are removed at start.
//
// Per N, on fresh host data dirs:
//   p2p:  the publisher daemon (holding the imported image) and N host daemons, each in its own
//         namespace (`--bootstrap` the publisher, `--no-mdns`); once every host is connected to the
//         publisher and to the other hosts (found through the DHT; see settleMesh), N
//         `collective-peer pull ROOT` commands start at once, each sent from this process to its
//         host's control socket (POST /run, as the CLI forwards it; no CLI process per host: N of
//         them starting at once on 2 cores took up to 1.1 s to reach their daemons).
//         Time = until the last pull returns. Publisher upload = its `status --json` transfer.bytesSent.
//   http: bench/http-serve.js in the publisher's namespace serving the raw image file; N `curl` (one
//         per host namespace) download it at once to a file in the host's dir.
// --warm: the publisher also holds a second image (other random bytes), and once the first pull is
//         done the same daemons pull it: row.warm. Fresh daemons spend much of the 2 cores compiling
//         (V8's TurboFan: ~30 % of all CPU at N = 16, every process compiling the same ~500
//         functions); daemons of a real swarm run for days, and each host has its own CPU.
// Links: each p2p pull also prints what the links carried (every node's bytes up and down, from its
//         bridge-side veth, and the drops of the download queues): bytes uploaded that no node
//         downloaded were dropped on the way, and TCP sent them again.
// Ideal time = image size / link rate (every host downloads at its full link rate). The image is
// random bytes (incompressible; --compressible F fills that fraction of each MiB with text).
// --publisher-nice N (default -10): the publisher daemon, and the HTTP server, run at this nice
//         value. The N hosts crowd the 2 cores; each machine of a real swarm has its own CPU, and
//         the source's upload is the swarm's bottleneck: starved of CPU, its link idles. 0 = off.
// --cpu-prof DIR: every daemon writes a V8 CPU profile there (diagnosis; slows them a little).
// --log-dir DIR: daemons run with DEBUG=collective:* and their stderr goes to DIR/<N>-<host>.log
//         (with any stdout line that is not an event, e.g. --trace-gc's).
// --tcp-cc NAME (default cubic): the TCP congestion control of every node's namespace (`system`: the
//         kernel's default). This VM's kernel defaults to BBR (v1), which most hosts do not run
//         (Debian, Ubuntu, Fedora and RHEL default to CUBIC). With 16 BBR flows into each host's 50 ms
//         tail-drop queue, 10 % of the bytes the hosts uploaded were dropped and sent again
//         (docs/benchmarks.md). A CUBIC not in net.ipv4.tcp_allowed_congestion_control (namespaces
//         other than the first may only pick those) is added to it for the run, and the list restored.
// --timeline[=S]: every p2p pull also samples every link's counters each second and prints, per S s (5), how
//         busy the hosts' downloads and all nodes' uploads were (% of their shaped rate), and how
//         many hosts had finished: where a swarm leaves its links idle (start, middle or tail).
// --node-args="FLAGS": node flags for every daemon (diagnosis, e.g. --node-args=--trace-gc with --log-dir).
// Last stdout line: one JSON object with every row.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { cli, cliAvailable, fmtMiB, log, machine, MIB, parseArgs, rmrf, round, run, ROOT, sync, table, tempDir,
  warm, warmTree } from './lib.js';
import { cpuSeconds, daemonCli, makeImage, Proc, startDaemon } from './swarm-lib.js';

const withTimeout = (promise, ms, what) => Promise.race([promise,
  new Promise((_, reject) => { setTimeout(() => reject(new Error(`${what}: timed out after ${ms / 1000} s`)), ms).unref(); })]);

const loadavgAtStart = loadavg().map((x) => round(x, 2));
const args = parseArgs();
const hostCounts = String(args.hosts ?? '4,8,16').split(',').map(Number);
// Defaults scaled to the 2-core machine (docs/benchmarks.md): 128 MiB, and links of 50 Mbit/s for
// N <= 8, 25 Mbit/s for N = 16: the hosts' links add up to at most AGGREGATE_MBIT. The CPU a swarm
// needs grows with what all its hosts receive per second; at 200 Mbit/s 8 or 16 hosts need more
// than the 2 cores have, and so do 16 hosts at 50 Mbit/s (90-96 % busy): the figure then measures
// the machine, not the swarm. --rate-mbit R sets one rate for every N.
const sizeMiB = Number(args['size-mib'] ?? 128);
const AGGREGATE_MBIT = 400;
const fixedRate = args['rate-mbit'] != null ? Number(args['rate-mbit']) : null;
const rateFor = (n) => fixedRate ?? Math.min(50, AGGREGATE_MBIT / n);
/** The link rate and ideal time (size / link) of the run under way (set per N). */
let rateMbit = rateFor(hostCounts[0]);
let idealSeconds = NaN;
const compressible = Number(args.compressible ?? 0);
const skipHttp = Boolean(args['skip-http']);
const warmPull = Boolean(args.warm);
const publisherNice = Number(args['publisher-nice'] ?? -10);
const renice = (pid) => { if (publisherNice !== 0) sh('renice', ['-n', String(publisherNice), '-p', String(pid)]); };
if (args['node-args'] === true) {
  console.error('--node-args takes its flags after =, e.g. --node-args="--trace-gc"');
  process.exit(2);
}
const nodeArgs = [...(args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${args['cpu-prof']}`] : []),
  ...(typeof args['node-args'] === 'string' ? args['node-args'].split(' ').filter(Boolean) : [])];
const logDir = args['log-dir'] ? String(args['log-dir']) : null;
const tcpCc = String(args['tcp-cc'] ?? 'cubic');
const timeline = Boolean(args.timeline);
const timelineStep = typeof args.timeline === 'string' ? Number(args.timeline) : 5;
if (logDir) mkdirSync(logDir, { recursive: true });
const daemonLog = (n, name) => (logDir ? { env: { DEBUG: 'collective:*' }, stderrFile: join(logDir, `${n}-${name}.log`) } : {});
const bytes = sizeMiB * MIB;
const SUBNET = '10.213.0';
const PUB_IP = `${SUBNET}.1`;
const hostIp = (i) => `${SUBNET}.${10 + i}`;
const TAG = `cpfan-${process.pid}`;
const BR = `${TAG}-br`;
const PUB = `${TAG}-p`;
const hostNs = (i) => `${TAG}-h${i}`;

if (process.getuid?.() !== 0) { console.error('fanout.js needs root (ip netns, tc)'); process.exit(2); }
for (const t of ['ip', 'tc', 'curl']) {
  if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) { console.error(`missing tool: ${t}`); process.exit(2); }
}
const a = await cliAvailable();
if (!a.ok) { console.error(`collective-peer CLI not usable (${a.why}); build it first (npm run build)`); process.exit(2); }

// ---- namespaces ----
const namespaces = new Set();
function sh(cmd, argv, { allowFail = false } = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${argv.join(' ')}: ${(r.stderr || r.stdout || '').trim()}`);
  return r;
}
const ipns = (ns, ...argv) => sh('ip', ['netns', 'exec', ns, ...argv]);
function listNetns() {
  return existsSync('/run/netns') ? readdirSync('/run/netns') : [];
}
function deleteNetns(ns) {
  sh('ip', ['netns', 'del', ns], { allowFail: true });
  namespaces.delete(ns);
}
function removeStale() {
  for (const ns of listNetns()) {
    const m = /^cpfan-(\d+)-/.exec(ns);
    if (m == null || Number(m[1]) === process.pid) continue;
    let alive = true;
    try { process.kill(Number(m[1]), 0); } catch { alive = false; }
    if (!alive) { log(`removing stale namespace ${ns}`); deleteNetns(ns); }
  }
}
function shape(ns, dev, rate = rateMbit) {
  // tbf: a burst of 128 KiB lets a GSO super-packet (up to 64 KiB) through whole (with less, tbf
  // splits it into segments: at N = 16, 1.5x the CPU); the queue holds ~50 ms at the rate.
  sh('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rate}mbit`,
    'burst', '128kb', 'latency', '50ms']);
}
function addNode(ns, ip, index) {
  sh('ip', ['netns', 'add', ns]);
  namespaces.add(ns);
  const peer = `v${index}`;
  sh('ip', ['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', peer, 'netns', BR]);
  ipns(ns, 'ip', 'link', 'set', 'lo', 'up');
  if (tcpCc !== 'system') ipns(ns, 'sysctl', '-q', '-w', `net.ipv4.tcp_congestion_control=${tcpCc}`);
  ipns(ns, 'ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
  ipns(ns, 'ip', 'link', 'set', 'eth0', 'up');
  ipns(BR, 'ip', 'link', 'set', peer, 'master', 'br0');
  ipns(BR, 'ip', 'link', 'set', peer, 'up');
  shape(ns, 'eth0'); // the node's upload
  shape(BR, peer); // the node's download
  links.push([ns, peer]);
}
const ALLOWED_CC = '/proc/sys/net/ipv4/tcp_allowed_congestion_control';
/** The allowed list as it was, when allowCongestionControl changed it (restored by cleanup). */
let allowedBefore = null;
/** Lets namespaces pick `tcpCc` (the kernel allows them only the algorithms listed in ALLOWED_CC). */
function allowCongestionControl() {
  if (tcpCc === 'system') return;
  const available = readFileSync('/proc/sys/net/ipv4/tcp_available_congestion_control', 'utf8').trim().split(/\s+/);
  if (!available.includes(tcpCc)) throw new Error(`--tcp-cc ${tcpCc}: this kernel has ${available.join(', ')}`);
  const allowed = readFileSync(ALLOWED_CC, 'utf8').trim();
  if (allowed.split(/\s+/).includes(tcpCc)) return;
  allowedBefore = allowed;
  writeFileSync(ALLOWED_CC, `${allowed} ${tcpCc}`);
}
function restoreCongestionControl() {
  if (allowedBefore == null) return;
  try { writeFileSync(ALLOWED_CC, allowedBefore); } catch { /* not ours to fail on */ }
  allowedBefore = null;
}
/** Every node's namespace and its bridge-side veth, for reshape. */
const links = [];
/** Shapes every link (both directions) to `rate` Mbit/s. */
function reshape(rate) {
  for (const [ns, peer] of links) {
    shape(ns, 'eth0', rate);
    shape(BR, peer, rate);
  }
}
function setupNetwork(maxHosts) {
  removeStale();
  allowCongestionControl();
  sh('ip', ['netns', 'add', BR]);
  namespaces.add(BR);
  ipns(BR, 'ip', 'link', 'set', 'lo', 'up');
  ipns(BR, 'ip', 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  ipns(BR, 'ip', 'link', 'set', 'br0', 'up');
  addNode(PUB, PUB_IP, 0);
  for (let i = 1; i <= maxHosts; i++) addNode(hostNs(i), hostIp(i), i);
}

// ---- processes ----
const procs = new Set();
const track = (p) => { procs.add(p); p.closed.then(() => procs.delete(p)); return p; };
const dir = tempDir('fanout');
let cleaning;
function cleanup() {
  cleaning ??= (async () => {
    await Promise.all([...procs].map((p) => p.stop(5_000)));
    for (const ns of [...namespaces].reverse()) deleteNetns(ns);
    restoreCongestionControl();
    if (!args.keep) rmrf(dir);
  })();
  return cleaning;
}
process.on('exit', () => { // last resort (sync): nothing of ours survives the script
  for (const p of procs) { try { p.child.kill('SIGKILL'); } catch { /* gone */ } }
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
  restoreCongestionControl();
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { log(`${sig}: cleaning up`); cleanup().finally(() => process.exit(130)); });
}

/** The useful line of a failed command's error: its last stderr line, not the command. */
const errorLine = (err) => String(err?.message ?? err).trim().split('\n').filter((l) => l.trim()).pop();

/** Total CPU seconds used by these processes since `before` (a Map pid -> seconds). */
const cpuMark = (ps) => new Map(ps.map((p) => [p.pid, cpuSeconds(p.pid) ?? 0]));
const cpuSince = (ps, before) => ps.reduce((n, p) => n + Math.max(0, (cpuSeconds(p.pid) ?? before.get(p.pid)) - before.get(p.pid)), 0);

/**
 * What every link has carried: per bridge-side veth (`v0` the publisher, `v<i>` host i), the bytes
 * its node uploaded (the veth's rx) and downloaded (tx), and the packets the download queue (tbf)
 * dropped. Bytes uploaded that no node downloaded were dropped on the way (and sent again by TCP).
 */
function linkCounters() {
  const out = new Map();
  const devices = JSON.parse(ipns(BR, 'ip', '-s', '-j', 'link', 'show').stdout);
  for (const l of devices) if (/^v\d+$/.test(l.ifname)) out.set(l.ifname, { up: l.stats64.rx.bytes, down: l.stats64.tx.bytes, drops: 0 });
  for (const q of JSON.parse(ipns(BR, 'tc', '-s', '-j', 'qdisc', 'show').stdout)) {
    if (q.kind === 'tbf' && out.has(q.dev)) out.get(q.dev).drops = q.drops;
  }
  return out;
}
/** What the links of the publisher and `n` hosts carried between two linkCounters() readings. */
function linkTraffic(before, after, n) {
  let up = 0;
  let down = 0;
  let drops = 0;
  for (let i = 0; i <= n; i++) {
    const a = before.get(`v${i}`);
    const b = after.get(`v${i}`);
    if (a == null || b == null) continue;
    up += b.up - a.up;
    down += b.down - a.down;
    drops += b.drops - a.drops;
  }
  return { uploadedBytes: up, downloadedBytes: down, lostBytes: up - down, lostOfUpload: round((up - down) / up, 3), queueDrops: drops };
}

/** Bytes the publisher daemon has sent so far (its status through the control socket). */
const publisherSent = async (pubDir) => (await daemonCli(pubDir, ['status'])).result.transfer?.bytesSent ?? NaN;

/**
 * Every host pulls `root` at once; times from the start of the pulls, the CPU of `all` meanwhile,
 * and when the publisher had sent 10, 50, 90 and 100 % of the image (sampled every 0.5 s): every
 * block leaves the publisher at least once, so its link bounds the swarm, and these say when it was
 * not busy (the start, or the end).
 */
async function pullAll(hosts, root, all, timeoutMs, pubDir) {
  const cpu0 = cpuMark(all);
  const links0 = linkCounters();
  const sent0 = await publisherSent(pubDir);
  const t0 = performance.now();
  const samples = [];
  const linkSamples = [];
  const doneAt = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const b = await publisherSent(pubDir).catch(() => NaN);
      const t = (performance.now() - t0) / 1000;
      samples.push([t, b - sent0]);
      if (timeline && (linkSamples.length === 0 || t - linkSamples.at(-1).t >= 0.95)) linkSamples.push({ t, c: linkCounters() });
    }
  })();
  // `pull` is sent to each daemon's control socket from here, as the CLI forwards it, without a node
  // process per host: N CLI processes starting at once on 2 cores took up to 1.1 s to reach their
  // daemons, a cost of crowding the hosts on one machine that a real host does not pay.
  const results = await Promise.allSettled(hosts.map(async (h) => {
    const r = await withTimeout(daemonCli(h.dataDir, ['pull', root]), timeoutMs, `host ${h.i}: pull`);
    doneAt.push((performance.now() - t0) / 1000);
    return { i: h.i, seconds: (performance.now() - t0) / 1000, cliSeconds: r.seconds, ...r.result };
  }));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSince(all, cpu0);
  const links = linkTraffic(links0, linkCounters(), hosts.length);
  sampling = false;
  await sampler;
  const reached = (f) => { const x = samples.find(([, b]) => b >= f * bytes); return x ? round(x[0], 1) : null; };
  const publisherAt = { p10: reached(0.1), p50: reached(0.5), p90: reached(0.9), p100: reached(1) };
  const failed = results.filter((r) => r.status === 'rejected');
  const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const times = ok.map((r) => r.seconds).sort((x, y) => x - y);
  return {
    seconds: round(seconds, 2), vsIdeal: round(seconds / idealSeconds, 2),
    firstDone: round(times[0], 2), medianDone: round(times[Math.floor(times.length / 2)], 2),
    pullPeers: ok.map((r) => r.peers),
    failed: failed.length, errors: failed.slice(0, 3).map((r) => errorLine(r.reason)),
    cpuSeconds: round(cpu, 1), cpuUtilization: round(cpu / (2 * seconds), 2), publisherAt, links,
    ...(timeline ? { timeline: linkTimeline([{ t: 0, c: links0 }, ...linkSamples], hosts.length, doneAt) } : {}),
  };
}

/**
 * Per timelineStep seconds of a pull: the hosts' downloads and every node's uploads as a share of their shaped rate
 * (from the bridge-side veths' counters), and how many hosts had finished by its end.
 */
function linkTimeline(samples, n, doneAt) {
  const capacity = (rateMbit * 1e6) / 8; // bytes per second per link
  const rows = [];
  for (let k = 0, start = 0; start < samples.length - 1; k++) {
    const end = samples.findLastIndex((s) => s.t <= (k + 1) * timelineStep + 0.05);
    if (end <= start) continue; // no sample in this step (the sampler was late): the next row covers it
    const a = samples[start].c;
    const b = samples[end].c;
    const dt = samples[end].t - samples[start].t;
    let down = 0;
    let up = 0;
    const hostUp = [];
    let pubUp = NaN;
    for (let i = 0; i <= n; i++) {
      const x = a.get(`v${i}`);
      const y = b.get(`v${i}`);
      if (x == null || y == null) continue;
      up += y.up - x.up;
      if (i > 0) { down += y.down - x.down; hostUp.push((y.up - x.up) / (capacity * dt)); }
      else pubUp = (y.up - x.up) / (capacity * dt);
    }
    rows.push({ from: round(samples[start].t, 1), to: round(samples[end].t, 1),
      hostsDown: round(down / (n * capacity * dt), 2), allUp: round(up / ((n + 1) * capacity * dt), 2),
      publisherUp: round(pubUp, 2), hostUpMin: round(Math.min(...hostUp), 2), hostUpMax: round(Math.max(...hostUp), 2),
      done: doneAt.filter((d) => d <= samples[end].t).length });
    start = end;
  }
  return rows;
}

// The swarm the pulls start in: every host connected to the publisher and to every other host (each
// finds the others through the publisher's DHT and dials them), or MESH_WAIT_MS passed. Hosts of a
// real swarm have joined it before an appliance is announced; pulling while 17 daemons still run
// ~120 noise handshakes on 2 cores delayed every host's start by ~1 s.
const MESH_WAIT_MS = 20_000;
async function settleMesh(n, hosts) {
  const t = performance.now();
  let counts = [];
  while (performance.now() - t < MESH_WAIT_MS) {
    counts = await Promise.all(hosts.map(async (h) => (await daemonCli(h.dataDir, ['status'])).result.peers));
    if (counts.every((c) => c >= n)) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const full = counts.filter((c) => c >= n).length;
  log(`N=${n}: ${full} of ${n} hosts connected to all ${n} others after ${((performance.now() - t) / 1000).toFixed(1)} s` +
    (full < n ? ` (peer counts ${counts.join(' ')}; pulling anyway)` : ''));
  // Let the last handshakes' identify and DHT exchanges finish before the clock starts.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
}

async function p2pRun(n, root, pubDir) {
  const runDir = join(dir, `p2p-${n}`);
  mkdirSync(runDir, { recursive: true });
  // Generous: with every block coming from the publisher, the p2p run takes as long as HTTP (N x ideal).
  const timeoutMs = Math.max(300_000, idealSeconds * n * 3_000);
  const pub = await startDaemon(pubDir, { listen: `/ip4/${PUB_IP}/tcp/4001`, wrap: ['ip', 'netns', 'exec', PUB], name: 'publisher', nodeArgs, ...daemonLog(n, 'publisher') });
  track(pub.proc);
  renice(pub.proc.pid);
  if (nodeArgs.length) log(`N=${n}: publisher pid ${pub.proc.pid} (profiles: CPU.*.<pid>.*.cpuprofile)`);
  const hosts = await Promise.all(Array.from({ length: n }, async (_, k) => {
    const i = k + 1;
    const d = await startDaemon(join(runDir, `h${i}`), {
      listen: `/ip4/${hostIp(i)}/tcp/4001`, bootstrap: [pub.p2p], wrap: ['ip', 'netns', 'exec', hostNs(i)], name: `host ${i}`, nodeArgs, ...daemonLog(n, `h${i}`),
    });
    track(d.proc);
    await d.proc.waitFor((e) => e.type === 'peer:connect' || e.type === 'bootstrap:connected', { what: 'a connection to the publisher' });
    return { i, dataDir: join(runDir, `h${i}`), ...d };
  }));
  const all = [pub.proc, ...hosts.map((h) => h.proc)];
  await settleMesh(n, hosts);
  const statuses = async () => await Promise.all([pubDir, ...hosts.map((h) => h.dataDir)].map(async (d) => (await daemonCli(d, ['status'])).result));
  const before = await statuses();
  const first = await pullAll(hosts, root, all, timeoutMs, pubDir);
  const [pubStatus, ...hostStatus] = await statuses();
  const row = {
    mode: 'p2p', hosts: n, ...first,
    publisherBytesSent: pubStatus.transfer?.bytesSent ?? null,
    publisherUploadVsSize: round((pubStatus.transfer?.bytesSent ?? NaN) / bytes, 3),
    hostsBytesSent: hostStatus.reduce((s, x) => s + (x.transfer?.bytesSent ?? 0), 0),
    hostsBytesReceived: hostStatus.reduce((s, x) => s + (x.transfer?.bytesReceived ?? 0), 0),
    hostPeers: hostStatus.map((x) => x.peers),
    fullGcs: fullGcs(before, [pubStatus, ...hostStatus]),
  };
  if (warmRoot != null) {
    // The same daemons pull a second image: a swarm whose daemons have run for a while (V8 has
    // compiled their hot code), as when a publisher announces a new appliance.
    log(`N=${n}: first pull done in ${first.seconds} s; the same daemons now pull the second image`);
    const w = await pullAll(hosts, warmRoot, all, timeoutMs, pubDir);
    const after = await statuses();
    const sent = (after[0].transfer?.bytesSent ?? NaN) - (pubStatus.transfer?.bytesSent ?? NaN);
    row.warm = { ...w, publisherBytesSent: sent, publisherUploadVsSize: round(sent / bytes, 3), fullGcs: fullGcs([pubStatus, ...hostStatus], after) };
  }
  await Promise.all(all.map((p) => p.stop()));
  rmrf(runDir);
  return row;
}

/**
 * Full GCs (mark-compacts) each daemon ran during a pull, from `status` before and after (publisher
 * first): a daemon with ~20 per 128 MiB had a GC storm (docs/benchmarks.md, the exchange section).
 */
function fullGcs(before, after) {
  const d = after.map((x, i) => (x.process?.gc?.major ?? 0) - (before[i].process?.gc?.major ?? 0));
  const hosts = d.slice(1);
  return { publisher: d[0], hostsTotal: hosts.reduce((a, b) => a + b, 0), hostsMost: Math.max(0, ...hosts) };
}

/** One line for a p2p pull of N hosts (`label` p2p or warm). */
function logPull(label, n, r) {
  log(`${label} N=${String(n).padStart(2)}: all done in ${r.seconds} s (${r.vsIdeal} x ideal; first ${r.firstDone} s, median ` +
    `${r.medianDone} s), publisher sent ${fmtMiB(r.publisherBytesSent)} MiB (${r.publisherUploadVsSize} x size), ` +
    `CPU ${r.cpuSeconds} s (${Math.round(r.cpuUtilization * 100)} % of 2 cores)` +
    `${r.fullGcs != null ? `, full GCs: publisher ${r.fullGcs.publisher}, hosts ${r.fullGcs.hostsTotal} (at most ${r.fullGcs.hostsMost} in one)` : ''}` +
    `${r.failed ? `, ${r.failed} FAILED: ${r.errors[0]}` : ''}`);
  const l = r.links;
  if (l != null) log(`${label} N=${String(n).padStart(2)}: the links carried ${fmtMiB(l.uploadedBytes)} MiB up, ${fmtMiB(l.downloadedBytes)} MiB down: ` +
    `${fmtMiB(l.lostBytes)} MiB (${round(l.lostOfUpload * 100, 1)} % of the upload) dropped on the way, ${l.queueDrops} drops at download queues`);
  if (r.timeline != null) {
    log(`${label} N=${String(n).padStart(2)}: link use per ${timelineStep} s (hosts' downloads / all uploads [least–most a host uploaded] publisher's upload, % of the links; hosts done):`);
    const pc = (x) => Math.round(x * 100);
    log('  ' + r.timeline.map((x) => `${Math.round(x.to)}s ${pc(x.hostsDown)}/${pc(x.allUp)} [${pc(x.hostUpMin)}–${pc(x.hostUpMax)}] ${pc(x.publisherUp)}${x.done ? ` ${x.done}` : ''}`).join('  '));
  }
  const at = r.publisherAt;
  if (at != null) log(`${label} N=${String(n).padStart(2)}: publisher had sent 10 / 50 / 90 / 100 % of the image at ${at.p10} / ${at.p50} / ${at.p90} / ${at.p100} s (ideal ${round(0.1 * idealSeconds, 1)} / ${round(0.5 * idealSeconds, 1)} / ${round(0.9 * idealSeconds, 1)} / ${round(idealSeconds, 1)})`);
}

async function httpRun(n, image) {
  const runDir = join(dir, `http-${n}`);
  mkdirSync(runDir, { recursive: true });
  const server = track(new Proc(process.execPath, [join(ROOT, 'bench', 'http-serve.js'), '--file', image, '--host', PUB_IP, '--port', '8080'],
    { wrap: ['ip', 'netns', 'exec', PUB], name: 'http server' }));
  const ready = await server.waitFor((e) => e.type === 'ready', { what: 'ready' });
  renice(server.pid);
  const cpu0 = cpuMark([server]);
  const t0 = performance.now();
  const timeoutMs = Math.max(300_000, idealSeconds * n * 3_000);
  const results = await Promise.allSettled(Array.from({ length: n }, async (_, k) => {
    const i = k + 1;
    const r = await run('ip', ['netns', 'exec', hostNs(i), 'curl', '-sS', '--fail', '-o', join(runDir, `h${i}.img`),
      '-w', '%{size_download}', ready.url], { timeoutMs, measureRss: false });
    const got = Number(r.stdout.trim());
    if (got !== bytes) throw new Error(`host ${i}: curl got ${got} bytes`);
    return { i, seconds: (performance.now() - t0) / 1000 };
  }));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSince([server], cpu0);
  await server.stop();
  const stopped = server.events.find((e) => e.type === 'stopped');
  const failed = results.filter((r) => r.status === 'rejected');
  const times = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.seconds).sort((x, y) => x - y);
  rmrf(runDir);
  return {
    mode: 'http', hosts: n, seconds: round(seconds, 2), vsIdeal: round(seconds / idealSeconds, 2),
    firstDone: round(times[0], 2), medianDone: round(times[Math.floor(times.length / 2)], 2),
    publisherBytesSent: stopped?.bytesSent ?? null, publisherUploadVsSize: round((stopped?.bytesSent ?? NaN) / bytes, 3),
    failed: failed.length, errors: failed.slice(0, 3).map((r) => errorLine(r.reason)),
    serverCpuSeconds: round(cpu, 1),
  };
}

const rows = [];
let root;
let warmRoot;
try {
  const t0 = performance.now();
  const image = join(dir, 'image.raw');
  makeImage(image, bytes, { compressible });
  const pubDir = join(dir, 'publisher');
  const imp = await cli(pubDir, ['import', image]);
  root = imp.result.root;
  if (warmPull) {
    const image2 = join(dir, 'image2.raw');
    makeImage(image2, bytes, { compressible });
    warmRoot = (await cli(pubDir, ['import', image2])).result.root;
    rmrf(image2);
  }
  log(`image ${sizeMiB} MiB (${compressible ? `${compressible * 100} % text, rest ` : ''}random), root ${root}, ` +
    `${imp.result.blocks} blocks; links ${hostCounts.map((n) => `${rateFor(n)} Mbit/s at N = ${n}`).join(', ')}, each way`);
  warm(image);
  // The publisher's store too, as the HTTP server's file: its import wrote the packs with O_DIRECT.
  warmTree(join(pubDir, 'store'));
  sync();
  setupNetwork(Math.max(...hostCounts));
  log(`network: ${namespaces.size} namespaces (${TAG}-*), ${SUBNET}.0/24, tbf on every veth end, TCP ${tcpCc}; ` +
    `publisher and HTTP server at nice ${publisherNice}`);

  for (const n of hostCounts) {
    sync(); // the last run's files (N curl downloads) written out now, not during this one
    if (rateFor(n) !== rateMbit) reshape(rateFor(n));
    rateMbit = rateFor(n);
    idealSeconds = (bytes * 8) / (rateMbit * 1e6);
    log(`N=${n}: links ${rateMbit} Mbit/s, ideal time (size/link) ${idealSeconds.toFixed(1)} s`);
    const p = await p2pRun(n, root, pubDir);
    Object.assign(p, { rateMbit, idealSeconds: round(idealSeconds, 2) });
    rows.push(p);
    logPull('p2p ', n, p);
    if (p.warm != null) logPull('warm', n, p.warm);
    if (!skipHttp) {
      sync();
      const h = await httpRun(n, image);
      Object.assign(h, { rateMbit, idealSeconds: round(idealSeconds, 2) });
      rows.push(h);
      log(`http N=${String(n).padStart(2)}: all done in ${h.seconds} s (${h.vsIdeal} x ideal; first ${h.firstDone} s), ` +
        `server sent ${fmtMiB(h.publisherBytesSent)} MiB (${h.publisherUploadVsSize} x size)${h.failed ? `, ${h.failed} FAILED: ${h.errors[0]}` : ''}`);
    }
  }

  log('');
  log(`image ${sizeMiB} MiB`);
  table(['mode', 'hosts', 'link Mbit/s', 'ideal s', 'all done s', 'x ideal', 'median s', 'publisher sent MiB', 'x size', 'CPU util'],
    rows.flatMap((r) => [r, ...(r.warm != null ? [{ ...r.warm, mode: 'p2p warm', hosts: r.hosts, rateMbit: r.rateMbit, idealSeconds: r.idealSeconds }] : [])])
      .map((r) => [r.mode, r.hosts, r.rateMbit, r.idealSeconds, r.seconds, r.vsIdeal, r.medianDone, fmtMiB(r.publisherBytesSent ?? NaN), r.publisherUploadVsSize,
        r.cpuUtilization ?? '']));
  log(`goals: p2p all-done within 1.3 x ideal; publisher upload <= 1.5 x size (total ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  console.log(JSON.stringify({
    bench: 'fanout', bytes, sizeMiB, aggregateMbit: fixedRate == null ? AGGREGATE_MBIT : null, tcpCongestionControl: tcpCc, compressible, publisherNice, root,
    machine: machine(), loadavgAtStart, loadavgAtEnd: loadavg().map((x) => round(x, 2)), rows,
    goals: Object.fromEntries(rows.filter((r) => r.mode === 'p2p').map((r) => [r.hosts, {
      timeWithin1_3: r.failed === 0 && r.vsIdeal <= 1.3, uploadWithin1_5: r.publisherUploadVsSize <= 1.5 }])),
  }));
} finally {
  await cleanup();
}
