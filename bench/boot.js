#!/usr/bin/env node
// Time from `run` to the userspace marker of the test appliance (TCG), four ways, interleaved:
//   (a) floor:  plain QEMU booting the same kernel, initrd and raw disk file directly
//   (b) local:  `collective-peer run <appliance-id>` on the host that holds every block (its daemon)
//   (c) cold:   a fresh daemon that holds nothing, its one peer a daemon on loopback that holds the
//               appliance; `run <appliance-id>` (manifest from the DHT, blocks on demand), published
//               without and with a boot profile (recorded by this script with run --record-profile)
// For (c), the bytes fetched before the marker: the disk's blocks the boot waited for or that were
// fetched ahead from the profile (status --json "lazy"), as a share of the disk image, and every
// block byte received (the kernel and initrd, pulled whole before QEMU starts, and the background
// pull of the disk that runs behind the boot) on the wire.
//
//   node bench/boot.js [--runs N] [--pad-mib N] [--timeout SECONDS] [--trace-dir DIR]
//
// --trace-dir DIR keeps each cold daemon's debug log (DEBUG=collective:*) and the run's timeline
// (t0 = the `run` command spawned, in ms) in DIR, to see where a cold start spends its time.
//
// --pad-mib N grows the disk by N MiB of random data in a file the boot never reads (resize2fs +
// debugfs on a copy), so the background pull has real work while the guest boots. The marker is
// detected the same way in every case: polling the console log file every 20 ms. Medians of --runs
// (default 3). Last stdout line: one JSON object.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, openSync, readFileSync, readSync, existsSync, writeFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { CLI, MIB, ROOT, fmtMiB, log, machine, parseArgs, rmrf, round, run, table, tempDir } from './lib.js';
import { startDaemon } from './swarm-lib.js';

const args = parseArgs();
const runs = Math.max(1, Number(args.runs ?? 3));
const padMiB = Math.max(0, Number(args['pad-mib'] ?? 0));
const bootTimeoutMs = Math.max(30, Number(args.timeout ?? 180)) * 1000;
const traceDir = args['trace-dir'] != null ? String(args['trace-dir']) : undefined;
const MARKER = 'COLLECTIVE-APPLIANCE-READY';
const CMDLINE = 'console=ttyS0 quiet no_timer_check collective.halt=1';
const MEMORY = '256M';
const loadavgAtStart = loadavg().map((x) => round(x, 2));
const dir = tempDir('boot');
const daemons = [];
const children = new Set();
let exiting = false;
process.on('exit', () => {
  for (const c of children) if (c.exitCode == null) c.kill('SIGKILL');
  for (const d of daemons) if (!d.proc.exited) d.proc.child.kill('SIGKILL');
  if (!exiting) rmrf(dir);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The test appliance (built and cached by scripts/fixtures/make-appliance.sh). */
function appliance() {
  const r = spawnSync('bash', [join(ROOT, 'scripts/fixtures/make-appliance.sh')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  if (r.status !== 0) throw new Error(`make-appliance.sh failed (${r.status})`);
  const a = join(ROOT, '.cache', 'appliance');
  return { disk: join(a, 'disk.img'), kernel: existsSync(join(a, 'vmlinux')) ? join(a, 'vmlinux') : join(a, 'vmlinuz'), initrd: join(a, 'initrd.img') };
}

/** A copy of the disk grown by `mib` MiB of random bytes in /pad.bin (never read by the boot). */
function paddedDisk(disk, mib) {
  const out = join(dir, 'disk.img');
  spawnSync('cp', ['--sparse=always', disk, out]);
  if (mib === 0) return out;
  const size = statSync(disk).size + (mib + 64) * MIB;
  spawnSync('truncate', ['-s', String(size), out]);
  const pad = join(dir, 'pad.bin');
  for (const [cmd, argv] of [['resize2fs', ['-f', out]], ['sh', ['-c', `head -c ${mib * MIB} /dev/urandom > ${pad}`]], ['debugfs', ['-w', '-R', `write ${pad} pad.bin`, out]]]) {
    const r = spawnSync(cmd, argv, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  }
  rmrf(join(dir, 'pad.bin'));
  return out;
}

/** Resolves with the time the marker appeared in `path` (polled every 20 ms), or rejects. */
async function waitMarker(path, { timeoutMs = bootTimeoutMs, exited } = {}) {
  const deadline = Date.now() + timeoutMs;
  let at = 0;
  let text = '';
  const buf = Buffer.alloc(65536);
  let done = false;
  exited?.then(() => { done = true; });
  for (;;) {
    if (existsSync(path)) {
      const fd = openSync(path, 'r');
      try {
        for (;;) {
          const n = readSync(fd, buf, 0, buf.length, at);
          if (n === 0) break;
          at += n;
          text += buf.subarray(0, n).toString('utf8');
        }
      } finally { closeSync(fd); }
      if (text.includes(MARKER)) return performance.now();
    }
    if (done) throw new Error(`the VM exited before ${MARKER}: ${text.slice(-800)}`);
    if (Date.now() > deadline) throw new Error(`no ${MARKER} in ${path} within ${timeoutMs} ms: ${text.slice(-800)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function spawnTracked(cmd, argv, opts = {}) {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  let stderr = '';
  child.stdout.resume();
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
  return { child, exited, stderr: () => stderr };
}

/** A CLI command run inside a daemon through its control socket (no node process to start). */
function inDaemon(dataDir, argv) {
  return new Promise((resolve, reject) => {
    const body = Buffer.from(JSON.stringify({ argv: ['--data-dir', dataDir, ...argv], cwd: dir, tty: { stdout: false, stderr: false } }));
    const req = request({ socketPath: join(dataDir, 'control.sock'), path: '/run', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      let buffered = Buffer.alloc(0);
      let stdout = '';
      res.on('data', (chunk) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 5) {
          const length = buffered.readUInt32BE(1);
          if (buffered.length < 5 + length) break;
          if (buffered[0] === 1) stdout += buffered.subarray(5, 5 + length).toString('utf8');
          buffered = buffered.subarray(5 + length);
        }
      });
      res.on('end', () => {
        const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
        try { resolve(JSON.parse(lines[lines.length - 1])); } catch (err) { reject(new Error(`no JSON from ${argv.join(' ')}: ${stdout}`)); }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

// ---- (a) plain QEMU -------------------------------------------------------------------------------
async function floorRun(app, disk, i) {
  const copy = join(dir, `floor-${i}.img`);
  spawnSync('cp', ['--sparse=always', disk, copy]);
  const consoleLog = join(dir, `floor-${i}.log`);
  const t0 = performance.now();
  const q = spawnTracked('qemu-system-x86_64', ['-machine', 'pc,accel=tcg', '-m', MEMORY, '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none',
    '-chardev', `file,id=console,path=${consoleLog}`, '-serial', 'chardev:console',
    '-drive', `file=${copy},format=raw,if=none,id=d0,cache=writeback`, '-device', 'virtio-blk-pci,drive=d0',
    '-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0',
    '-kernel', app.kernel, '-initrd', app.initrd, '-append', CMDLINE]);
  const marker = await waitMarker(consoleLog, { exited: q.exited });
  await q.exited;
  rmrf(copy);
  return { seconds: (marker - t0) / 1000 };
}

// ---- (b), (c): collective-peer run ----------------------------------------------------------------
async function cpRun(dataDir, ref, name, { sample } = {}) {
  const consoleLog = join(dataDir, 'vms', name, 'console.log');
  rmrf(join(dataDir, 'vms', name));
  const t0 = performance.now();
  const t0Epoch = Date.now();
  const r = spawnTracked(process.execPath, [CLI, '--data-dir', dataDir, 'run', ref, '--name', name, '--accel', 'tcg', '--fresh']);
  let stdout = '';
  r.child.stdout.setEncoding('utf8').on('data', (d) => { stdout = (stdout + d).slice(-4000); });
  let qemuAt = null;
  r.child.stderr.on('data', (d) => { if (qemuAt == null && /VM \S+ started/.test(String(d))) qemuAt = performance.now(); });
  const marker = await waitMarker(consoleLog, { exited: r.exited });
  const lazy = sample != null ? await sample() : undefined;
  const exit = await r.exited;
  if (exit.code !== 0) {
    const vmDir = join(dataDir, 'vms', name);
    const file = (f) => { try { return readFileSync(join(vmDir, f), 'utf8').slice(-1500); } catch { return '(none)'; } };
    throw new Error(`run ${ref} exited ${exit.code}: ${r.stderr().slice(-800)}\nstdout: ${stdout.slice(-1500)}\nexit.json: ${file('exit.json')}\nqemu.log: ${file('qemu.log')}`);
  }
  return { t0Epoch, seconds: (marker - t0) / 1000, qemuStartSeconds: qemuAt != null ? (qemuAt - t0) / 1000 : null, ...lazy };
}

async function coldRun(source, id, name, i) {
  const hostDir = join(dir, `cold-${name}-${i}`);
  const trace = traceDir != null ? { env: { DEBUG: process.env.TRACE_DEBUG ?? 'collective:*' }, stderrFile: join(traceDir, `cold-${name}-${i}.log`) } : {};
  if (traceDir != null) mkdirSync(traceDir, { recursive: true });
  const host = await startDaemon(hostDir, { bootstrap: [source.p2p], name: `cold-${i}`, ...trace });
  daemons.push(host);
  try {
    for (let t = 0; t < 100; t++) {
      if ((await inDaemon(hostDir, ['status', '--json'])).peers > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const sample = async () => {
      const s = await inDaemon(hostDir, ['status', '--json']);
      return { diskBytes: s.lazy.demandBytes + s.lazy.prefetchBytes, demandBytes: s.lazy.demandBytes, prefetchBytes: s.lazy.prefetchBytes, wireBytes: s.transfer.bytesReceived };
    };
    const result = await cpRun(hostDir, id, name, { sample });
    if (traceDir != null) appendFileSync(join(traceDir, `cold-${name}-${i}.log`), `TIMELINE run spawned at ${new Date(result.t0Epoch).toISOString()}, VM started +${Math.round(result.qemuStartSeconds * 1000)} ms, marker +${Math.round(result.seconds * 1000)} ms\n`);
    return result;
  } finally {
    await host.proc.stop();
    rmrf(hostDir);
  }
}

async function main() {
  const app = appliance();
  const disk = paddedDisk(app.disk, padMiB);
  const diskSize = statSync(disk).size;
  // What a host would download to have the whole appliance: the disk, the kernel and the initrd.
  const applianceBytes = diskSize + statSync(app.kernel).size + statSync(app.initrd).size;
  log(`boot bench: test appliance, disk ${fmtMiB(diskSize)} MiB (pad ${padMiB} MiB), kernel ${fmtMiB(statSync(app.kernel).size)} MiB, ${runs} runs, TCG`);

  // The publisher: every block local; a second daemon so the DHT has somewhere to put records.
  const sourceDir = join(dir, 'source');
  const source = await startDaemon(sourceDir, { name: 'source' });
  daemons.push(source);
  const helper = await startDaemon(join(dir, 'helper'), { bootstrap: [source.p2p], name: 'helper' });
  daemons.push(helper);
  const cp = async (argv, opts = {}) => {
    const r = await run(process.execPath, [CLI, '--data-dir', sourceDir, ...argv], { measureRss: false, timeoutMs: 600_000, ...opts });
    return r;
  };
  await cp(['key', 'create', '--name', 'default']);
  const publish = async (name, bootProfile) => {
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify({
      name, disks: [{ role: 'program', image: disk }],
      vm: { memory: MEMORY, cpus: 1, kernel: app.kernel, initrd: app.initrd, cmdline: CMDLINE }, config: {},
      ...(bootProfile != null ? { bootProfile } : {}),
    }));
    const r = await cp(['publish', file, '--json']);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  };
  const plain = await publish('bench-plain');
  const listed = (await cp(['ls', '--json'])).stdout.trim().split('\n').map((l) => JSON.parse(l));
  const diskStored = listed.find((r) => r.root === plain.disks[0].root)?.stored ?? null;
  // The profile: a first boot on the publisher, recorded up to the marker.
  const profileFile = join(dir, 'profile.cbor');
  await cp(['run', 'bench-plain', '--name', 'record', '--fresh', '--accel', 'tcg', '--record-profile', profileFile, '--record-until', MARKER]);
  const profiled = await publish('bench-profiled', profileFile);
  const profileBytes = statSync(profileFile).size;

  const results = { floor: [], local: [], coldPlain: [], coldProfile: [] };
  for (let i = 0; i < runs; i++) {
    results.floor.push(await floorRun(app, disk, i));
    results.local.push(await cpRun(sourceDir, plain.id, `local-${i}`));
    // Alternate which cold case goes first (the machine's load drifts).
    const cold = [async () => results.coldPlain.push(await coldRun(source, plain.id, 'plain', i)),
      async () => results.coldProfile.push(await coldRun(source, profiled.id, 'profiled', i))];
    for (const c of i % 2 === 0 ? cold : cold.reverse()) await c();
    log(`round ${i + 1}: floor ${results.floor[i].seconds.toFixed(2)} s, local ${results.local[i].seconds.toFixed(2)} s, ` +
      `cold ${results.coldPlain[i].seconds.toFixed(2)} s, cold+profile ${results.coldProfile[i].seconds.toFixed(2)} s`);
  }

  const summary = (rs) => {
    const out = { seconds: round(median(rs.map((r) => r.seconds))), runs: rs.map((r) => round(r.seconds)) };
    if (rs[0].qemuStartSeconds !== undefined) out.qemuStartSeconds = round(median(rs.map((r) => r.qemuStartSeconds ?? NaN)));
    if (rs[0].diskBytes !== undefined) {
      for (const k of ['diskBytes', 'demandBytes', 'prefetchBytes', 'wireBytes']) out[k] = median(rs.map((r) => r[k]));
      out.diskShare = round(out.diskBytes / diskSize, 4);
      out.wireShare = round(out.wireBytes / diskSize, 4);
      out.wireShareOfAppliance = round(out.wireBytes / applianceBytes, 4);
    }
    return out;
  };
  const s = { floor: summary(results.floor), local: summary(results.local), coldPlain: summary(results.coldPlain), coldProfile: summary(results.coldProfile) };
  const ratio = (x) => round(x.seconds / s.floor.seconds, 2);
  // The load on a shared machine drifts: each round's cases ran minutes apart at most, so the median
  // of per-round ratios is the steadier figure.
  const roundRatio = (rs) => round(median(rs.map((r, i) => r.seconds / results.floor[i].seconds)), 2);
  log('');
  table(['case', 'to marker (s)', 'vs floor', 'QEMU up at (s)', 'disk bytes fetched', 'share of disk', 'all bytes received'], [
    ['(a) plain QEMU, raw file', s.floor.seconds, '1.00', '', '', '', ''],
    ['(b) local, in the store', s.local.seconds, ratio(s.local), s.local.qemuStartSeconds, '', '', ''],
    ['(c) cold, no profile', s.coldPlain.seconds, ratio(s.coldPlain), s.coldPlain.qemuStartSeconds, fmtMiB(s.coldPlain.diskBytes) + ' MiB', `${(100 * s.coldPlain.diskShare).toFixed(2)} %`, fmtMiB(s.coldPlain.wireBytes) + ' MiB'],
    ['(c) cold, boot profile', s.coldProfile.seconds, ratio(s.coldProfile), s.coldProfile.qemuStartSeconds, fmtMiB(s.coldProfile.diskBytes) + ' MiB', `${(100 * s.coldProfile.diskShare).toFixed(2)} %`, fmtMiB(s.coldProfile.wireBytes) + ' MiB'],
  ]);
  log(`median of per-round ratios to the floor: local ${roundRatio(results.local)}, cold ${roundRatio(results.coldPlain)}, cold with a profile ${roundRatio(results.coldProfile)}`);
  log('disk bytes: fetched because the guest read them (demand) or ahead from the profile, before the marker;');
  log('all bytes: every block byte on the wire before the marker (kernel + initrd pulled whole, the background pull);');
  log(`  as a share of the whole appliance (disk + kernel + initrd, ${fmtMiB(applianceBytes)} MiB): ` +
    `${(100 * s.coldPlain.wireShareOfAppliance).toFixed(1)} % without a profile, ${(100 * s.coldProfile.wireShareOfAppliance).toFixed(1)} % with one.`);
  const out = {
    bench: 'boot', runs, padMiB, marker: MARKER, accel: 'tcg',
    image: { diskBytes: diskSize, diskStoredBytes: diskStored, applianceBytes,
      kernelBytes: statSync(app.kernel).size, initrdBytes: statSync(app.initrd).size, profileBytes },
    ...s,
    ratios: { local: ratio(s.local), coldPlain: ratio(s.coldPlain), coldProfile: ratio(s.coldProfile) },
    ratiosPerRound: { local: roundRatio(results.local), coldPlain: roundRatio(results.coldPlain), coldProfile: roundRatio(results.coldProfile) },
    goals: { coldWithin1_5xFloor: roundRatio(results.coldProfile) <= 1.5, fetchedBeforeMarkerAtMost10Percent: s.coldProfile.diskShare <= 0.1 },
    loadavgAtStart, loadavgAtEnd: loadavg().map((x) => round(x, 2)), machine: machine(),
  };
  for (const d of daemons) await d.proc.stop();
  console.log(JSON.stringify(out));
}

main().catch((err) => { console.error(err.stack ?? String(err)); process.exitCode = 1; }).finally(() => { exiting = true; rmrf(dir); });
