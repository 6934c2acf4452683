#!/usr/bin/env node
// The single-source baseline of bench/fanout.js: node's http serving one raw file to every client.
//
//   node bench/http-serve.js --file PATH --host IP [--port N]
//       prints {"type":"ready","url"}; GET / streams the file (Content-Length set); on SIGTERM prints
//       {"type":"stopped","bytesSent","requests"} and exits.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { parseArgs } from './lib.js';

const args = parseArgs();
const file = String(args.file);
const size = statSync(file).size;
let bytesSent = 0;
let requests = 0;
// No request timeout: node's default (300 s) can cut a download that the shaped link makes last
// longer (N = 16 at 50 Mbit/s: the last of 16 downloads ends after ~360 s).
const server = createServer({ requestTimeout: 0 }, (req, res) => {
  requests++;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
  const rs = createReadStream(file, { highWaterMark: 256 * 1024 });
  rs.on('data', (c) => { bytesSent += c.length; });
  rs.pipe(res);
  res.on('close', () => rs.destroy());
});
server.listen(Number(args.port ?? 0), String(args.host ?? '127.0.0.1'), () => {
  const { address, port } = server.address();
  process.stdout.write(JSON.stringify({ type: 'ready', url: `http://${address}:${port}/` }) + '\n');
});
const stop = () => {
  process.stdout.write(JSON.stringify({ type: 'stopped', bytesSent, requests }) + '\n');
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
