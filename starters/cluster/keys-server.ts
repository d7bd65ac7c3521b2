/**
 * The small process that serves the cluster's public key set to the frontend, on loopback only:
 * `node keys-server.js <jwks.json> <port> [bind address]`. It serves that one file, read at each
 * request so a rotated key is picked up, and nothing else. `up` starts it and `down` stops it by
 * its pid; a container deployment binds it where the Temporal server can reach it.
 */
import fs from 'node:fs';
import http from 'node:http';

const [file, port, bind = '127.0.0.1'] = process.argv.slice(2);
if (!file || !port) {
  process.stderr.write('usage: keys-server <jwks.json> <port> [bind address]\n');
  process.exit(2);
}

http
  .createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/jwks.json') return void res.writeHead(404).end();
    fs.readFile(file, (err, body) => {
      if (err) return void res.writeHead(503).end();
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
    });
  })
  .listen(Number(port), bind);
