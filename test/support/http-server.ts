/**
 * A local HTTP server for download tests: serves in-memory files on 127.0.0.1 with Range support,
 * and can misbehave per path: answer 404, cut the body short (always or once), or stall mid-body.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type ServeMode = 'normal' | 'not-found' | 'truncated' | 'truncate-once' | 'stall' | 'no-range';

export interface ServedRequest {
  path: string;
  range?: string;
  status: number;
  /** The Authorization header the request carried. */
  authorization?: string;
}

export interface FileServer {
  url: (path: string) => string;
  /** Every request, in order. */
  requests: ServedRequest[];
  setFile(path: string, body: Buffer | string, mode?: ServeMode): void;
  setMode(path: string, mode: ServeMode): void;
  close(): Promise<void>;
}

interface Served {
  body: Buffer;
  mode: ServeMode;
}

/** Parses `bytes=N-` or `bytes=N-M`; anything else is served whole. */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = header ? /^bytes=(\d+)-(\d*)$/.exec(header) : null;
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

/**
 * Listens on loopback unless `host` names another address of this machine (a cluster's gateway).
 * With `authorization`, every request without that exact Authorization header gets 401.
 */
export async function startFileServer(o: { host?: string; authorization?: string } = {}): Promise<FileServer> {
  const host = o.host ?? '127.0.0.1';
  const files = new Map<string, Served>();
  const requests: ServedRequest[] = [];
  const sockets = new Set<Socket>();

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const file = files.get(path);
    const record = (status: number) =>
      requests.push({
        path,
        range: req.headers.range,
        status,
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      });
    if (o.authorization !== undefined && req.headers.authorization !== o.authorization) {
      record(401);
      res.writeHead(401, { 'www-authenticate': 'Basic realm="lists"' }).end('unauthorized');
      return;
    }
    if (!file || file.mode === 'not-found') {
      record(404);
      res.writeHead(404).end('not found');
      return;
    }
    const range = file.mode === 'no-range' ? undefined : parseRange(req.headers.range, file.body.length);
    if (range === 'unsatisfiable') {
      record(416);
      res.writeHead(416, { 'content-range': `bytes */${file.body.length}` }).end();
      return;
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? file.body.length - 1;
    const slice = file.body.subarray(start, end + 1);
    const status = range ? 206 : 200;
    record(status);
    res.writeHead(status, {
      'content-length': slice.length,
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${start}-${end}/${file.body.length}` } : {}),
    });
    const half = slice.subarray(0, Math.floor(slice.length / 2));
    switch (file.mode) {
      case 'truncate-once':
        file.mode = 'normal';
        res.write(half, () => res.socket?.destroy());
        return;
      case 'truncated':
        res.write(half, () => res.socket?.destroy());
        return;
      case 'stall':
        res.write(half); // and then nothing, until the client gives up
        return;
      default:
        res.end(slice);
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: (path) => `http://${host}:${port}${path}`,
    requests,
    setFile(path, body, mode = 'normal') {
      files.set(path, { body: Buffer.isBuffer(body) ? body : Buffer.from(body), mode });
    },
    setMode(path, mode) {
      const file = files.get(path);
      if (!file) throw new Error(`no file ${path}`);
      file.mode = mode;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
