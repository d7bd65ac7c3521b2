/**
 * The rate a volume's speed limit achieves: a file of N MiB carried through the same pipe that
 * carries `zfs send | zfs recv` (here `cat | dd`), unlimited and at a few limits. The token bucket
 * allows one second of burst, so the achieved rate sits at or just above the limit over a short
 * transfer and approaches it from above as the transfer grows. Prints achieved rate vs limit.
 *
 *   npm run bench -- bench/sync-throttle.ts [MiB]
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPipe } from '../activities/drivers/pipe.js';
import { checkInt } from '../common/names.js';
import { createLogger } from '../lib/logger.js';

const MiB = 1024 * 1024;
const size = checkInt('MiB', process.argv[2] ?? '128', 8, 4096);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-throttle-'));
const source = path.join(dir, 'source.bin');
const target = path.join(dir, 'target.bin');
const pipe = createPipe(createLogger('bench', 'error'));

try {
  const block = crypto.randomBytes(MiB);
  const out = fs.openSync(source, 'w');
  for (let i = 0; i < size; i++) fs.writeSync(out, block);
  fs.closeSync(out);

  console.log(`${size} MiB through cat | dd`);
  console.log('limit MiB/s  achieved MiB/s  achieved/limit  seconds');
  for (const limit of [undefined, 32, 16, 8]) {
    const started = performance.now();
    await pipe(
      ['cat', '--', source],
      ['dd', `of=${target}`, 'bs=1M', 'status=none'],
      limit ? { bytesPerSecond: limit * MiB } : {},
    );
    const seconds = (performance.now() - started) / 1000;
    if (fs.statSync(target).size !== size * MiB) throw new Error('the copy is not complete');
    const achieved = size / seconds;
    console.log(
      `${String(limit ?? 'none').padStart(11)}  ${achieved.toFixed(1).padStart(14)}  ${(limit ? (achieved / limit).toFixed(3) : '-').padStart(14)}  ${seconds.toFixed(2).padStart(7)}`,
    );
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
