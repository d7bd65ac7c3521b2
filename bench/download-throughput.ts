/**
 * Download + verify throughput: a 1 GiB image served over local HTTP, fetched with imgflow's
 * downloader (size and sha512 checked in the same pass as the write), against `sha512sum` of the
 * same file from the page cache. Prints both rates and their ratio (aim: at least 0.9).
 *
 *   npm run bench -- bench/download-throughput.ts [MiB]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { download } from '../activities/cloud/download.js';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { createLogger } from '../lib/logger.js';

const SERVER = `
const http = require('node:http'), fs = require('node:fs');
const file = process.argv[1], size = fs.statSync(file).size;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-length': String(size) });
  fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

const mib = checkInt('MiB', process.argv[2] ?? '1024', 16, 65536);
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'imgflow-bench-download-'));
const image = path.join(dir, 'image.raw');
const run = createRunner(createLogger('bench', 'error'));

try {
  // Random bytes, so nothing along the way can take a shortcut on zeros.
  await run(['dd', 'if=/dev/urandom', `of=${image}`, 'bs=1M', `count=${mib}`, 'status=none']);
  const size = (await fs.stat(image)).size;
  const seconds = async (fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    return (performance.now() - t) / 1000;
  };

  let sha512 = '';
  await run(['sha512sum', image]); // warm the page cache
  const hashSeconds = await seconds(async () => (sha512 = (await run(['sha512sum', image])).stdout.split(' ')[0]!));

  // The server runs in its own process, as a real one would: this process only downloads.
  const server = spawn(process.execPath, ['-e', SERVER, image], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [port] = (await once(server.stdout, 'data')) as [Buffer];
  const url = `http://127.0.0.1:${port.toString().trim()}/image.raw`;
  const downloadSeconds = await seconds(() => download({ url, sha512, size }, { cacheDir: path.join(dir, 'cache') }));
  server.kill();

  const rate = (s: number) => (size / 1024 / 1024 / s).toFixed(0).padStart(6);
  console.log(`${mib} MiB image, local HTTP`);
  console.log(`sha512sum (page cache)          ${rate(hashSeconds)} MiB/s  ${hashSeconds.toFixed(2)} s`);
  console.log(`download + size + sha512, 1 pass ${rate(downloadSeconds)} MiB/s  ${downloadSeconds.toFixed(2)} s`);
  console.log(`ratio (download / sha512sum): ${(hashSeconds / downloadSeconds).toFixed(2)}`);
} finally {
  await fs.rm(dir, { recursive: true, force: true });
}
