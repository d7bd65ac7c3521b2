/**
 * What the build report's measurements cost: a real build (bookworm minbase + less, prepare,
 * measure, qcow2) through the builder activities, with every `du` the runner starts timed
 * (measureRoot after each phase), and installedPackages and writeManifest timed on the finished
 * tree. Prints each and their sum as a share of the build's wall time.
 *
 *   node --import tsx bench/report-cost.ts [mirror]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createBuilderActivities } from '../activities/builder/index.js';
import { installedPackages, writeManifest } from '../activities/builder/measure.js';
import { machineMirror } from '../activities/builder/recipe.js';
import { releaseMounts } from '../activities/builder/rootfs.js';
import { createRunner, type Run } from '../activities/runner.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { MINBASE_PREPARE, minbaseSource } from './minbase-build.js';

const mirror = process.argv[2] ?? machineMirror() ?? 'http://deb.debian.org/debian';
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-report-'));
const config = loadConfig({ home, host: 'bench' }, {});
const inner = createRunner(createLogger('bench', 'error'));
const du = { calls: 0, ms: 0 };
/** The real runner, timing the disk-usage walks measureRoot makes. */
const run: Run = async (argv, options) => {
  const started = performance.now();
  try {
    return await inner(argv, options);
  } finally {
    if (argv[0] === 'du') {
      du.calls++;
      du.ms += performance.now() - started;
    }
  }
};
const builder = createBuilderActivities({ run, config });
const source = minbaseSource(mirror);
const prepare = MINBASE_PREPARE;
const ref = { build: 'report-cost', arch: 'x86_64' };
const root = path.join(home, 'builder', 'x86_64', 'builds', ref.build, 'root');

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const value = await fn();
  return [value, performance.now() - started];
}

try {
  const [phases, buildMs] = await timed(async () => [
    await builder.bootstrap({ ...ref, source }),
    await builder.installPackages({ ...ref, packages: ['less'] }),
    await builder.prepare({ ...ref, prepare }),
    await builder.measure(ref),
    await builder.packOutputs({ ...ref, image: 'bench', version: '1', outputs: ['qcow2'] }),
  ]);
  // Every phase row and the measure step read the dpkg database once.
  const listings = phases.length;
  const [packages, listMs] = await timed(() => installedPackages(root));
  const manifestFile = path.join(home, 'manifest.jsonl');
  const [manifest, manifestMs] = await timed(() => writeManifest(run, root, manifestFile));
  // What the manifest hashed: the bytes of every regular file.
  const entries = fs
    .readFileSync(manifestFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { type: string; size: number });
  const hashedMiB = entries.filter((e) => e.type === 'file').reduce((sum, e) => sum + e.size, 0) / 2 ** 20;
  await builder.removeBuild(ref);

  const cost = du.ms + listMs * listings + manifestMs;
  const s = (ms: number) => `${(ms / 1000).toFixed(2).padStart(7)} s`;
  const share = (ms: number) => `${((100 * ms) / buildMs).toFixed(2).padStart(6)} %`;
  console.log(`build: debootstrap bookworm minbase + less, prepare, measure, qcow2; mirror ${mirror}`);
  console.log(`build wall time                               ${s(buildMs)}`);
  console.log(`measureRoot disk usage (du, ${du.calls} calls)             ${s(du.ms)}  ${share(du.ms)}`);
  console.log(
    `installedPackages (${listings} x ${listMs.toFixed(1)} ms, ${packages.length} packages)   ${s(listMs * listings)}  ${share(listMs * listings)}`,
  );
  console.log(
    `writeManifest (1 x, ${manifest.entries} entries, ${hashedMiB.toFixed(0)} MiB hashed) ${s(manifestMs)}  ${share(manifestMs)}`,
  );
  console.log(`report measurements                           ${s(cost)}  ${share(cost)}  (aim: under 5 %)`);
} finally {
  // A failed build may have left /proc mounted in its tree.
  await releaseMounts(inner, home);
  fs.rmSync(home, { recursive: true, force: true });
}
