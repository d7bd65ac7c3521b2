/**
 * Download + verify throughput: a 1 GiB image served over local HTTP, fetched with imgflow's
 * downloader (size and sha512 checked in the same pass as the write), against `sha512sum` of the
 * same file from the page cache. The two alternate for 7 rounds, since other work on the machine
 * moves single figures; prints each round and the ratio of the medians against the aim (at least 0.9).
 *
 * The server is a few lines of Python around sendfile(2), in its own process, as cheap as a
 * server can be: on a two-core machine whatever it spends is taken from the downloader.
 *
 *   npm run bench -- bench/download-throughput.ts [MiB] [rounds]
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
import { findOnPath } from '../lib/which.js';
import { median } from './stats.js';

/** Answers every GET with the whole file, sent by the kernel from the page cache. */
const SERVER = `
import os, socket, sys, threading
path = sys.argv[1]
size = os.path.getsize(path)
server = socket.create_server(('127.0.0.1', 0))
print(server.getsockname()[1], flush=True)
def answer(conn):
    with conn:
        request = b''
        while b'\\r\\n\\r\\n' not in request:
            data = conn.recv(65536)
            if not data:
                return
            request += data
        conn.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\nconnection: close\\r\\n\\r\\n' % size)
        with open(path, 'rb') as f:
            conn.sendfile(f)
while True:
    conn, _ = server.accept()
    threading.Thread(target=answer, args=(conn,), daemon=True).start()
`;

const mib = checkInt('MiB', process.argv[2] ?? '1024', 16, 65536);
const rounds = checkInt('rounds', process.argv[3] ?? '7', 1, 20);
const AIM = 0.9;
if (!findOnPath('python3')) throw new Error('python3 is needed for the sendfile server of this bench');
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'imgflow-bench-download-'));
const image = path.join(dir, 'image.raw');
const run = createRunner(createLogger('bench', 'error'));
// Random bytes, so nothing along the way can take a shortcut on zeros; on disk before the rounds, so
// that its writeback does not run during them.
await run(['dd', 'if=/dev/urandom', `of=${image}`, 'bs=1M', `count=${mib}`, 'status=none', 'conv=fsync']);
const server = spawn('python3', ['-c', SERVER, image], { stdio: ['ignore', 'pipe', 'inherit'] });

try {
  const size = (await fs.stat(image)).size;
  const [port] = (await once(server.stdout, 'data')) as [Buffer];
  const url = `http://127.0.0.1:${port.toString().trim()}/image.raw`;
  const seconds = async (fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    return (performance.now() - t) / 1000;
  };
  const rate = (s: number) => `${(size / 1024 / 1024 / s).toFixed(0).padStart(6)} MiB/s  ${s.toFixed(2)} s`;

  const sha512 = (await run(['sha512sum', image])).stdout.split(' ')[0]!; // also warms the page cache
  const hashTimes: number[] = [];
  const downloadTimes: number[] = [];
  console.log(`${mib} MiB image, local HTTP (sendfile server), ${rounds} rounds`);
  for (let round = 1; round <= rounds; round++) {
    hashTimes.push(await seconds(() => run(['sha512sum', image])));
    const cacheDir = path.join(dir, 'cache');
    await fs.rm(cacheDir, { recursive: true, force: true });
    const cpu = process.cpuUsage();
    downloadTimes.push(await seconds(() => download({ url, sha512, size }, { cacheDir, run })));
    const { user, system } = process.cpuUsage(cpu); // all of this process's threads, GC included; user time moves less than wall time under load
    console.log(
      `round ${round}: sha512sum ${rate(hashTimes.at(-1)!)} | download + size + sha512, 1 pass ${rate(downloadTimes.at(-1)!)}  (cpu: user ${(user / 1e6).toFixed(2)} s, sys ${(system / 1e6).toFixed(2)} s)`,
    );
  }
  console.log(`sha512sum (page cache)           ${rate(median(hashTimes))}  (median)`);
  console.log(`download + size + sha512, 1 pass ${rate(median(downloadTimes))}  (median)`);
  const ratio = median(hashTimes) / median(downloadTimes);
  console.log(
    `ratio (download / sha512sum): ${ratio.toFixed(2)}   aim: at least ${AIM} over ${rounds} rounds: ${ratio >= AIM ? 'met' : 'missed'}`,
  );
} finally {
  server.kill();
  await fs.rm(dir, { recursive: true, force: true });
}
