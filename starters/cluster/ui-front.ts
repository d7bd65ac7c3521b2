/**
 * The Web UI's front door on loopback: `node ui-front.js <listen port> <UI server port> <token file>`.
 * The frontend answers only calls that carry a token, and a browser sends none; this process
 * forwards each request to the UI server with a viewer's token (read per request, so a renewed
 * token is picked up). The UI therefore lists, describes and queries, and can change nothing.
 */
import fs from 'node:fs';
import http from 'node:http';

const [listenPort, upstreamPort, tokenFile] = process.argv.slice(2);
if (!listenPort || !upstreamPort || !tokenFile) {
  process.stderr.write('usage: ui-front <listen port> <UI server port> <token file>\n');
  process.exit(2);
}

http
  .createServer((req, res) => {
    let token: string;
    try {
      token = fs.readFileSync(tokenFile, 'utf8').trim();
    } catch {
      return void res.writeHead(503).end('no viewer token\n');
    }
    const headers = { ...req.headers, authorization: `Bearer ${token}` };
    const upstream = http.request(
      { host: '127.0.0.1', port: Number(upstreamPort), method: req.method, path: req.url, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.headersSent || res.writeHead(502).end());
    req.pipe(upstream);
  })
  .listen(Number(listenPort), '127.0.0.1');
