/**
 * Map latency for a small and a large base: N volumes mapped (clone, export, attach through the
 * volume workflow on local workers: qcow2 store, no export, local attach) from a 100 MiB and from
 * a 4 GiB qcow2 base, both fully written. Copy-on-write keeps a clone's cost independent of its
 * base's size, so both ratios should stay near 1. The first map of each base (its import into
 * the NAS's bases) is a warm-up and not counted. Prints p50/p95 per base and the 4 GiB / 100 MiB
 * ratio of each.
 *
 *   IMGFLOW_HOME=$(mktemp -d) npm run bench -- bench/map-latency.ts [N]
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { loadConfig, paths } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';
import { mapVolume, volumeHandle } from '../starters/volume-client.js';
import { deleteUpdate, unmapUpdate, type MapRequest } from '../workflows/volume/messages.js';
import { ms, percentile, timed } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '20', 3, 1000);
const MiB = 1024 * 1024;

const config = loadConfig();
const logger = createLogger('bench', 'error');
const run = createRunner(logger);
const { client, connection } = await ensureClient(config);
const local = await startLocalWorkers(config, ['orchestrator', 'nas', 'compute'], logger);
const stamp = Date.now().toString(36);

/** A fully written qcow2 base in the NAS's store, as a build leaves it. */
async function base(name: string, bytes: number): Promise<string> {
  const file = path.join(paths(config).nas(config.host), 'store', name, 'v1', `${name}-v1.qcow2`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(bytes)]);
  for (let offset = 0; offset < bytes; offset += 1024 * MiB) {
    await run([
      'qemu-io',
      '-f',
      'qcow2',
      '-c',
      `write -P 0x5a ${offset} ${Math.min(1024 * MiB, bytes - offset)}`,
      file,
    ]);
  }
  return file;
}

async function map(volume: string, image: string, file: string): Promise<number> {
  const request: MapRequest = {
    by: 'bench',
    base: { image, version: 'v1', artifact: { format: 'qcow2', host: config.host, path: file } },
    nas: config.host,
    computeHost: config.host,
  };
  return timed(() => mapVolume(client, volume, request));
}

async function cleanup(volume: string): Promise<void> {
  const handle = volumeHandle(client, volume);
  await handle.executeUpdate(unmapUpdate, { args: [{ by: 'bench' }] });
  await handle.executeUpdate(deleteUpdate, { args: [{ by: 'bench' }] });
}

const results: { label: string; times: number[] }[] = [];
for (const [label, bytes] of [
  ['100 MiB', 100 * MiB],
  ['4 GiB', 4096 * MiB],
] as const) {
  const image = `bench-${bytes / MiB}m-${stamp}`;
  const file = await base(image, bytes);
  await map(`${image}-warm`, image, file);
  await cleanup(`${image}-warm`);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    times.push(await map(`${image}-${i}`, image, file));
    await cleanup(`${image}-${i}`);
  }
  results.push({ label, times });
}
await local.stop();
await connection.close();

const [small, large] = results as [(typeof results)[0], (typeof results)[0]];
const ratio = (p: number) => (percentile(large.times, p) / percentile(small.times, p)).toFixed(2);
console.log(
  `map latency (clone + export none + local attach, through the volume workflow), N=${n} per base, server ${config.address}`,
);
console.log(`base          p50      p95   (ms)`);
for (const r of results)
  console.log(`${r.label.padEnd(8)} ${ms(percentile(r.times, 0.5))} ${ms(percentile(r.times, 0.95))}`);
console.log(`ratio 4 GiB / 100 MiB: p50 ${ratio(0.5)}, p95 ${ratio(0.95)} (copy-on-write: both near 1)`);
process.exit(0);
