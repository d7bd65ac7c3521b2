/**
 * A small static HTTP server on 127.0.0.1 for files this host publishes: the demo's signed image
 * list and its images, the benches' lists. Only the paths given to `publish` are served, each from
 * its file as it is at the time of the request; every request is recorded, so a caller can count
 * what a client fetched.
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';

export interface ServedRequest {
  path: string;
  status: number;
}

export interface FileServer {
  port: number;
  url(urlPath: string): string;
  /** Serves `file` at `urlPath` (which starts with "/") from now on. */
  publish(urlPath: string, file: string): void;
  /** Every request, in order. */
  requests: ServedRequest[];
  close(): Promise<void>;
}

/** Listens on `host` (127.0.0.1 by default), on `port` when given (0: any free port). */
export async function serveFiles(port = 0, host = '127.0.0.1'): Promise<FileServer> {
  const files = new Map<string, string>();
  const requests: ServedRequest[] = [];
  const sockets = new Set<Socket>();

  const server = http.createServer((req, res) => {
    const urlPath = new URL(req.url ?? '/', 'http://localhost').pathname;
    const file = files.get(urlPath);
    const answer = async () => {
      const size =
        file && req.method === 'GET'
          ? await fs.stat(file).then(
              (s) => s.size,
              () => undefined,
            )
          : undefined;
      const status = size === undefined ? (req.method === 'GET' ? 404 : 405) : 200;
      requests.push({ path: urlPath, status });
      if (status !== 200) return void res.writeHead(status).end();
      res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream' });
      await pipeline(createReadStream(file!, { highWaterMark: 1 << 20 }), res);
    };
    answer().catch(() => res.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    port: bound,
    url: (urlPath) => `http://${host}:${bound}${urlPath}`,
    publish: (urlPath, file) => void files.set(urlPath, file),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
