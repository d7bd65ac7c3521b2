/**
 * What the payload codec costs: sealing and opening payloads of typical sizes (a task queue name,
 * a version record, a build report, a large manifest), N of each, one at a time, and the bytes it
 * adds on the wire (nonce, tag, our metadata). Prints microseconds per payload (median, p95) and
 * the size overhead.
 *
 *   npm run bench -- bench/codec.ts [N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import proto from '@temporalio/proto';
import { checkInt } from '../common/names.js';
import { AesGcmCodec } from '../lib/codec.js';
import { createKeyring } from '../lib/keyring.js';
import { median, percentile, timed } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '2000', 10, 1_000_000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-codec-'));
const codec = new AesGcmCodec(createKeyring(path.join(dir, 'keys', 'codec.json')));
const wireBytes = (p: Payload) => proto.temporal.api.common.v1.Payload.encode(p).finish().length;
const us = (x: number) => (x * 1000).toFixed(1).padStart(9);

console.log(
  `payload codec, AES-256-GCM, ${n} payloads of each size, one per call (Node ${process.version}, ${os.cpus()[0]?.model ?? '?'})`,
);
console.log(
  `${'size'.padStart(10)} ${'seal p50 µs'.padStart(12)} ${'seal p95 µs'.padStart(12)} ${'open p50 µs'.padStart(12)} ${'open p95 µs'.padStart(12)} ${'+bytes'.padStart(7)}  ${'MiB/s (seal+open)'}`,
);
for (const bytes of [64, 1024, 16 * 1024, 256 * 1024, 2 * 1024 * 1024]) {
  const payload = defaultPayloadConverter.toPayload({ text: 'x'.repeat(bytes) });
  const count = Math.max(10, Math.round(n / Math.max(1, bytes / 16384)));
  const [sealed] = await codec.encode([payload]);
  for (let i = 0; i < 20; i++) await codec.decode(await codec.encode([payload])); // warm up
  const seal: number[] = [];
  const open: number[] = [];
  for (let i = 0; i < count; i++) {
    seal.push(await timed(() => codec.encode([payload])));
    open.push(await timed(() => codec.decode([sealed!])));
  }
  const overhead = wireBytes(sealed!) - wireBytes(payload);
  const mibs = bytes / 1024 / 1024 / ((median(seal) + median(open)) / 1000);
  console.log(
    `${String(bytes).padStart(10)} ${us(median(seal)).padStart(12)} ${us(percentile(seal, 0.95)).padStart(12)} ${us(median(open)).padStart(12)} ${us(percentile(open, 0.95)).padStart(12)} ${String(overhead).padStart(7)}  ${mibs.toFixed(0).padStart(8)}`,
  );
}
fs.rmSync(dir, { recursive: true, force: true });
