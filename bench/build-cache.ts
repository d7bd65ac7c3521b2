/**
 * Fresh build vs cached rebuild of the same debootstrap recipe (bookworm minbase + less, prepare,
 * measure, qcow2) through the real builder activities, without Temporal: the rebuild starts from
 * the bootstrap the first build cached. Prints both wall times and their ratio.
 *
 *   node --import tsx bench/build-cache.ts [mirror]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createBuilderActivities } from '../activities/builder/index.js';
import { releaseMounts } from '../activities/builder/rootfs.js';
import { machineMirror } from '../activities/builder/recipe.js';
import { createRunner } from '../activities/runner.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { MINBASE_PREPARE, minbaseSource } from './minbase-build.js';

const mirror = process.argv[2] ?? machineMirror() ?? 'http://deb.debian.org/debian';
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-cache-'));
const config = loadConfig({ home, host: 'bench' }, {});
const run = createRunner(createLogger('bench', 'error'));
const builder = createBuilderActivities({ run, config });
const source = minbaseSource(mirror);
const prepare = MINBASE_PREPARE;

/** One whole build; returns its wall time and what the bootstrap phase reported. */
async function build(
  name: string,
): Promise<{ ms: number; bootstrapMs: number; note: string; packages: number; phases: string }> {
  const ref = { build: name, arch: 'x86_64' };
  const phases: string[] = [];
  const timed = async <T>(phase: string, step: () => Promise<T>): Promise<T> => {
    const at = performance.now();
    const result = await step();
    phases.push(`${phase} ${((performance.now() - at) / 1000).toFixed(1)}`);
    return result;
  };
  const started = performance.now();
  const bootstrap = await timed('bootstrap', () => builder.bootstrap({ ...ref, source }));
  await timed('packages', () => builder.installPackages({ ...ref, packages: ['less'] }));
  await timed('prepare', () => builder.prepare({ ...ref, prepare }));
  const measured = await timed('measure', () => builder.measure(ref));
  await timed('pack', () => builder.packOutputs({ ...ref, image: 'bench', version: name, outputs: ['qcow2'] }));
  const ms = performance.now() - started;
  await builder.removeBuild(ref);
  return {
    ms,
    bootstrapMs: bootstrap.durationMs,
    note: bootstrap.note ?? 'fresh debootstrap',
    packages: measured.packages,
    phases: phases.join(', '),
  };
}

try {
  const fresh = await build('fresh');
  const cached = await build('cached');
  const s = (ms: number) => `${(ms / 1000).toFixed(1).padStart(6)} s`;
  console.log(`debootstrap bookworm minbase + less, prepare, measure, qcow2; mirror ${mirror}`);
  console.log(`                  build   bootstrap  packages  bootstrap note`);
  console.log(
    `fresh build    ${s(fresh.ms)}  ${s(fresh.bootstrapMs)}  ${String(fresh.packages).padStart(8)}  ${fresh.note}`,
  );
  console.log(
    `cached rebuild ${s(cached.ms)}  ${s(cached.bootstrapMs)}  ${String(cached.packages).padStart(8)}  ${cached.note}`,
  );
  console.log(`fresh phases (s):  ${fresh.phases}`);
  console.log(`cached phases (s): ${cached.phases}`);
  console.log(
    `cached / fresh: ${(cached.ms / fresh.ms).toFixed(3)} (${(fresh.ms / cached.ms).toFixed(1)}x faster; aim: under 0.2)`,
  );
} finally {
  // A failed build may have left /proc mounted in its tree.
  await releaseMounts(run, home);
  fs.rmSync(home, { recursive: true, force: true });
}
