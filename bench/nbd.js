#!/usr/bin/env node
// NBD read throughput: our export (a disk DAG in the store, served by the daemon's `nbd` service) vs
// qemu-nbd serving the same raw image, same run. Sequential: libnbd's `nbdcopy <uri> null:` (its
// defaults: multi-conn when offered, 256 KiB requests). Random 4 KiB: one client in this script (the
// same code for both servers), one connection, N reads in flight.
//
//   node bench/nbd.js [--image PATH] [--size MIB] [--runs N] [--depth N] [--random-reads N]
//                     [--chunker fixed|fastcdc] [--chunk-size BYTES]
//
// Without --image, a --size MiB image (default 1024) of random bytes with one 8 MiB hole in eight is
// generated. The image is read once first (page cache) and each server is read once before timing;
// the best of --runs (default 3) is reported. Last stdout line: one JSON object.
import { spawn } from 'node:child_process';
import { randomFillSync, randomInt } from 'node:crypto';
import { closeSync, existsSync, openSync, writeSync, ftruncateSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { cli, fileSize, fmtMiB, log, machine, MIB, parseArgs, rmrf, round, run, table, tempDir, warm, CLI } from './lib.js';

const args = parseArgs();
const runs = Math.max(1, Number(args.runs ?? 3));
const depth = Math.max(1, Number(args.depth ?? 32));
const randomReads = Math.max(1000, Number(args['random-reads'] ?? 20000));
const loadavgAtStart = loadavg().map((x) => round(x, 2));
const dir = tempDir('nbd');
const children = [];
process.on('exit', () => { for (const c of children) if (c.exitCode == null) c.kill('SIGKILL'); rmrf(dir); });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

function makeImage(path, mib) {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(8 * MIB);
  for (let at = 0, i = 0; at < mib * MIB; at += buf.length, i++) {
    if (i % 8 === 5) continue; // a hole
    randomFillSync(buf);
    writeSync(fd, buf, 0, buf.length, at);
  }
  ftruncateSync(fd, mib * MIB);
  closeSync(fd);
}

async function waitFor(path, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Seconds for `nbdcopy uri null:`. */
async function nbdcopy(uri, extra = []) {
  const r = await run('nbdcopy', [...extra, uri, 'null:'], { measureRss: false });
  if (r.code !== 0) throw new Error(`nbdcopy ${uri} failed: ${r.stderr}`);
  return r.seconds;
}

/** Random aligned 4 KiB reads, `depth` in flight on one connection; reads per second. */
async function random4k(socket, name, size, count) {
  const s = connect(socket);
  let buf = Buffer.alloc(0);
  let want = null;
  s.on('data', (d) => { buf = buf.length ? Buffer.concat([buf, d]) : d; want?.(); });
  const read = async (n) => { while (buf.length < n) await new Promise((r) => { want = r; }); const out = buf.subarray(0, n); buf = buf.subarray(n); return out; };
  const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
  const option = (opt, data) => { const h = Buffer.alloc(16); h.write('IHAVEOPT', 0, 'latin1'); h.writeUInt32BE(opt, 8); h.writeUInt32BE(data.length, 12); s.write(Buffer.concat([h, data])); };
  const optionReply = async () => { const h = await read(20); const len = h.readUInt32BE(16); if (len) await read(len); return h.readUInt32BE(12); };
  await read(18);
  s.write(u32(3));
  const n = Buffer.from(name);
  option(7, Buffer.concat([u32(n.length), n, Buffer.from([0, 0])])); // GO, no structured replies: simple replies
  for (let t = await optionReply(); t !== 1; t = await optionReply()) if (t >= 0x80000000) throw new Error(`GO refused: ${t}`);
  const blocks = Math.floor(size / 4096);
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt32BE(4096, 24);
  let sent = 0;
  const send = () => { header.writeBigUInt64BE(BigInt(sent), 8); header.writeBigUInt64BE(BigInt(randomInt(blocks) * 4096), 16); s.write(header); sent++; };
  const started = process.hrtime.bigint();
  for (let i = 0; i < depth && sent < count; i++) send();
  for (let done = 0; done < count; done++) {
    const r = await read(16);
    if (r.readUInt32BE(4) !== 0) throw new Error(`read error ${r.readUInt32BE(4)}`);
    await read(4096);
    if (sent < count) send();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  s.destroy();
  return count / seconds;
}

async function measure(label, uri, socket, name, size) {
  await nbdcopy(uri); // warm
  const seq = [];
  const rnd = [];
  for (let i = 0; i < runs; i++) {
    const seconds = await nbdcopy(uri);
    seq.push(size / MIB / seconds);
    rnd.push(await random4k(socket, name, size, randomReads));
    log(`${label.padEnd(8)} run ${i + 1}: sequential ${seq[i].toFixed(0)} MiB/s, random 4K ${rnd[i].toFixed(0)} reads/s`);
  }
  return { sequentialMiBps: Math.max(...seq), random4kIops: Math.max(...rnd) };
}

// ---- the image ------------------------------------------------------------------------------------
let image = args.image;
if (image == null) {
  image = join(dir, 'image.raw');
  const mib = Number(args.size ?? 1024);
  log(`generating a ${mib} MiB image (random data, one 8 MiB hole in eight)`);
  makeImage(image, mib);
}
const size = fileSize(image);
warm(image);

// ---- ours: the daemon's NBD service over the imported DAG --------------------------------------------
const data = join(dir, 'data');
const daemon = spawn(process.execPath, [CLI, '--data-dir', data, 'daemon', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0'], { stdio: ['ignore', 'ignore', 'inherit'] });
children.push(daemon);
await waitFor(join(data, 'control.sock'));
await waitFor(join(data, 'nbd.sock'));
const importArgs = ['import', image, '--name', 'bench'];
if (args.chunker) importArgs.push('--chunker', String(args.chunker));
if (args['chunk-size']) importArgs.push('--chunk-size', String(args['chunk-size']));
const imported = await cli(data, importArgs, { measureRss: false });
const root = imported.result.root;
log(`imported ${fmtMiB(size)} MiB as ${root} (${imported.result.blocks} blocks)`);
const oursSocket = join(data, 'nbd.sock');
const ours = await measure('ours', `nbd+unix:///${root}?socket=${oursSocket}`, oursSocket, root, size);

// ---- qemu-nbd on the raw file ---------------------------------------------------------------------
const qsock = join(dir, 'qemu-nbd.sock');
const qemuNbd = spawn('qemu-nbd', ['--read-only', '--persistent', '--shared=16', '--format=raw', `--socket=${qsock}`, image], { stdio: ['ignore', 'ignore', 'inherit'] });
children.push(qemuNbd);
await waitFor(qsock);
const qemu = await measure('qemu-nbd', `nbd+unix:///?socket=${qsock}`, qsock, '', size);

daemon.kill('SIGTERM');
qemuNbd.kill('SIGTERM');

const ratio = { sequential: round(ours.sequentialMiBps / qemu.sequentialMiBps), random4k: round(ours.random4kIops / qemu.random4kIops) };
log('');
table(['server', 'sequential MiB/s', 'random 4K reads/s'], [
  ['ours (DAG export)', ours.sequentialMiBps.toFixed(0), ours.random4kIops.toFixed(0)],
  ['qemu-nbd (raw file)', qemu.sequentialMiBps.toFixed(0), qemu.random4kIops.toFixed(0)],
  ['ratio', ratio.sequential, ratio.random4k]
]);
log(`goal: >= 0.8x qemu-nbd sequential: ${ratio.sequential >= 0.8 ? 'met' : 'not met'}`);
console.log(JSON.stringify({
  bench: 'nbd', imageBytes: size, runs, depth, randomReads, root,
  ours: { sequentialMiBps: round(ours.sequentialMiBps, 1), random4kIops: round(ours.random4kIops, 0) },
  baseline: { name: 'qemu-nbd', sequentialMiBps: round(qemu.sequentialMiBps, 1), random4kIops: round(qemu.random4kIops, 0) },
  ratio, goal: { sequential: 0.8 }, machine: machine(), loadavgAtStart
}));
process.exit(0);
