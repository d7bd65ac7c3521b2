/**
 * The package mirror as the cluster's hosts reach it: an HTTP proxy on the bridge's gateway that
 * forwards GET and HEAD requests for the named mirror hosts only, as a site's apt proxy does for
 * a build network with no route out. `node mirror-proxy.js <bind address> <port> <host,...>`.
 * Builders set `http_proxy` to it, which debootstrap's wget and apt inside the chroot both honour.
 * Anything else (another host, CONNECT, a write) is refused with 403.
 */
import http from 'node:http';

const [bind, port, allowed] = process.argv.slice(2);
if (!bind || !port || !allowed) {
  process.stderr.write('usage: mirror-proxy <bind address> <port> <mirror host,...>\n');
  process.exit(2);
}
const mirrors = new Set(allowed.split(','));
const HOP_BY_HOP = new Set([
  'host',
  'connection',
  'proxy-connection',
  'proxy-authorization',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The upstream URL of a proxied request, when it is one this proxy forwards. */
function upstream(req: http.IncomingMessage): URL | undefined {
  if (req.method !== 'GET' && req.method !== 'HEAD') return undefined;
  try {
    const url = new URL(req.url ?? '');
    return url.protocol === 'http:' && mirrors.has(url.host) ? url : undefined;
  } catch {
    return undefined;
  }
}

http
  .createServer((req, res) => {
    const url = upstream(req);
    if (!url)
      return void res.writeHead(403).end(`only GET and HEAD of http://{${[...mirrors].join(',')}}/ are forwarded\n`);
    // Hop-by-hop headers stay here; the upstream gets its own Host.
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([h]) => !HOP_BY_HOP.has(h)));
    const forward = http.request(url, { method: req.method, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.setTimeout(60_000, () => forward.destroy(new Error('upstream timed out')));
    forward.once('error', (err) => {
      if (!res.headersSent) res.writeHead(502).end(`${err.message}\n`);
      else res.destroy();
    });
    forward.end();
  })
  .listen(Number(port), bind);
