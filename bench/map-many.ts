/**
 * Many maps across many compute hosts, on the real tools: one NAS worker storing on ZFS
 * (zfs-fuse, a throwaway pool) and exporting through tgtd, and H compute-host workers
 * (`compute.<host>`, each its own host name and iSCSI initiator, attaching through libiscsi), all
 * Workers in this one process; the orchestrator runs in a process of its own, as on a site's
 * control host (`imgflow worker --role orchestrator`). V volumes are mapped with bounded
 * concurrency as the CLI maps them, then all unmapped, then all deleted.
 *
 * Then the same V volumes' steps run as a script would run them (the workflow's steps called
 * straight on the same NAS and per-host compute activities, at the same concurrency): the anchor.
 *
 * Prints maps/s, unmaps/s and deletes/s, p50/p95 per operation for both, imgflow's throughput as a
 * share of the script's, the errors, and what the tools themselves list before, while mapped and
 * after: tgtd's targets (this NAS's and all) and the clone datasets. A leaked target or clone, or
 * any error, makes the exit code 1.
 *
 *   IMGFLOW_HOME=$(mktemp -d) npm run bench -- bench/map-many.ts [volumes=200] [hosts=20] [concurrency=8]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_IQN_PREFIX, volumeOfTarget } from '../activities/drivers/naming.js';
import { parseTgtShow } from '../activities/drivers/export/tgt.js';
import { createComputeActivities } from '../activities/compute/index.js';
import { createNasVolumeActivities } from '../activities/nas/volumes.js';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { computeSettings, loadConfig, nasSettings, paths, type Config } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { hasWorker } from '../starters/answers.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers, type LocalWorkers } from '../starters/local-workers.js';
import { oneLine } from '../starters/output.js';
import { mapVolume, volumeHandle } from '../starters/volume-client.js';
import { createPool, holdTgtd, holdZfsFuse } from '../test/support/daemons.js';
import { until } from '../test/support/wait.js';
import { deleteUpdate, unmapUpdate, type MapRequest } from '../workflows/volume/messages.js';
import { directDelete, directMap, directUnmap, type DirectHosts } from './direct-volume.js';
import { ms, percentile } from './stats.js';

const volumes = checkInt('volumes', process.argv[2] ?? '200', 1, 10_000);
const hostCount = checkInt('hosts', process.argv[3] ?? '20', 1, 500);
const concurrency = checkInt('concurrency', process.argv[4] ?? '8', 1, 200);
const MiB = 1024 * 1024;

const logger = createLogger('bench', 'error');
const run = createRunner(logger);
const stamp = Date.now().toString(36);
const config = loadConfig({ host: `many-nas-${stamp}` });
const hosts = Array.from({ length: hostCount }, (_, i) => `many-c${String(i + 1).padStart(3, '0')}-${stamp}`);

const releaseZfs = holdZfsFuse();
const releaseTgtd = holdTgtd();
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-map-many-'));
const pool = createPool(scratch, 1024);
const clonesParent = `${pool.name}/imgflow/volumes`;
// The NAS's drivers read these; compute hosts keep their default initiator, `<prefix>:<host>`.
process.env.IMGFLOW_NAS_POOL = `${pool.name}/imgflow`;
process.env.IMGFLOW_NAS_EXPORT = 'tgt';

/** What the tools list: tgtd's targets (this NAS's, and all of them) and the clone datasets. */
async function census(): Promise<{ targets: number; allTargets: number; clones: number }> {
  const targets = parseTgtShow((await run(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target'])).stdout);
  const datasets = (
    await run(['zfs', 'list', '-H', '-r', '-t', 'filesystem', '-o', 'name', clonesParent], { okExitCodes: [1] })
  ).stdout.split('\n');
  return {
    targets: targets.filter((t) => volumeOfTarget(DEFAULT_IQN_PREFIX, config.host, t.iqn)).length,
    allTargets: targets.length,
    clones: datasets.filter((name) => name.startsWith(`${clonesParent}/`)).length,
  };
}

/** A raw base in the NAS's store, as a build leaves it. */
async function storedBase(image: string): Promise<MapRequest['base']> {
  const file = path.join(paths(config).nas(config.host), 'store', image, 'v1', `${image}-v1.raw`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run(['qemu-img', 'create', '-q', '-f', 'raw', file, String(64 * MiB)]);
  await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 8M', file]);
  return { image, version: 'v1', artifact: { format: 'raw', host: config.host, path: file } };
}

interface Outcome {
  times: number[];
  errors: string[];
  wallMs: number;
}

/** Runs `op` on every item, at most `concurrency` at once; each failure is kept, none stops the rest. */
async function each<T>(items: readonly T[], op: (item: T) => Promise<unknown>): Promise<Outcome> {
  const outcome: Outcome = { times: [], errors: [], wallMs: 0 };
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < items.length; i = next++) {
      const t = performance.now();
      try {
        await op(items[i]!);
        outcome.times.push(performance.now() - t);
      } catch (err) {
        outcome.errors.push(oneLine(err));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  outcome.wallMs = performance.now() - started;
  return outcome;
}

const workerGroups: LocalWorkers[] = [];
const { client, connection } = await ensureClient(config);
const before = await census();
const orchestrator = spawn(
  process.execPath,
  [fileURLToPath(new URL('../bin/imgflow.js', import.meta.url)), 'worker', '--role', 'orchestrator', '--metrics', ''],
  { env: { ...process.env, TEMPORAL_ADDRESS: config.address, IMGFLOW_HOME: config.home }, stdio: 'ignore' },
);
let exitCode = 1;
try {
  await until('the orchestrator to poll', () => hasWorker(client, config.namespace, WORKFLOW_QUEUE, 'workflow'));
  workerGroups.push(await startLocalWorkers(config, ['nas'], logger));
  for (const host of hosts)
    workerGroups.push(await startLocalWorkers({ ...config, host } satisfies Config, ['compute'], logger));
  const base = await storedBase(`many-${stamp}`);
  const request = (i: number): MapRequest => ({
    by: 'bench',
    base,
    nas: config.host,
    computeHost: hosts[i % hosts.length]!,
  });
  const names = Array.from({ length: volumes }, (_, i) => `many-${stamp}-${i}`);
  const indices = names.map((_, i) => i);
  const by = { by: 'bench' };

  // Warm-up, not counted: the base's import, the workflow bundle, every host's first poll.
  await each(
    hosts.map((_, i) => i),
    async (i) => {
      await mapVolume(client, `warm-${stamp}-${i}`, request(i));
      await volumeHandle(client, `warm-${stamp}-${i}`).executeUpdate(unmapUpdate, { args: [by] });
      await volumeHandle(client, `warm-${stamp}-${i}`).executeUpdate(deleteUpdate, { args: [by] });
    },
  );

  const maps = await each(indices, (i) => mapVolume(client, names[i]!, request(i)));
  const mapped = await census();
  const unmaps = await each(names, (name) => volumeHandle(client, name).executeUpdate(unmapUpdate, { args: [by] }));
  const deletes = await each(names, (name) => volumeHandle(client, name).executeUpdate(deleteUpdate, { args: [by] }));
  const after = await census();

  // The anchor: the same steps as a script runs them, on fresh names, at the same concurrency.
  const nas = createNasVolumeActivities({ run, config, settings: nasSettings() });
  const direct: DirectHosts[] = hosts.map((host) => ({
    nas,
    compute: createComputeActivities({ run, config: { ...config, host }, settings: computeSettings({}) }),
  }));
  const plain = names.map((name) => `${name}-d`);
  const urls: string[] = [];
  const script = {
    maps: await each(indices, async (i) => (urls[i] = await directMap(direct[i % hostCount]!, plain[i]!, base))),
    unmaps: await each(indices, (i) => directUnmap(direct[i % hostCount]!, plain[i]!, urls[i]!)),
    deletes: await each(indices, (i) => directDelete(direct[i % hostCount]!, plain[i]!)),
  };
  const afterScript = await census();

  const outcomes = [maps, unmaps, deletes, script.maps, script.unmaps, script.deletes];
  const errors = outcomes.reduce((sum, o) => sum + o.errors.length, 0);
  const leaked = { targets: afterScript.targets - before.targets, clones: afterScript.clones - before.clones };
  const perSecond = (o: Outcome) => o.times.length / (o.wallMs / 1000);
  console.log(
    `${volumes} maps, then unmaps, then deletes across ${hostCount} compute hosts (${hostCount + 1} Workers in one process, the orchestrator in another), concurrency ${concurrency}`,
  );
  console.log(`ZFS clones on zfs-fuse, iSCSI targets in tgtd, attached through libiscsi; server ${config.address}`);
  console.log(`operation     imgflow/s  script/s  share   p50 imgflow  p50 script  p95 imgflow  p95 script  errors`);
  for (const [label, o, d] of [
    ['map', maps, script.maps],
    ['unmap', unmaps, script.unmaps],
    ['delete', deletes, script.deletes],
  ] as const) {
    console.log(
      `${label.padEnd(9)} ${perSecond(o).toFixed(1).padStart(13)} ${perSecond(d).toFixed(1).padStart(9)} ${(perSecond(o) / perSecond(d)).toFixed(2).padStart(6)} ${ms(percentile(o.times, 0.5), 12)} ${ms(percentile(d.times, 0.5), 11)} ${ms(percentile(o.times, 0.95), 12)} ${ms(percentile(d.times, 0.95), 11)} ${String(o.errors.length + d.errors.length).padStart(7)}`,
    );
  }
  console.log(`share = imgflow's throughput over the script's (aim: at least 0.6); times in ms`);
  console.log(
    `tgt targets of this NAS: before ${before.targets}, mapped ${mapped.targets}, after ${after.targets} (all of tgtd's: ${before.allTargets}, ${mapped.allTargets}, ${after.allTargets})`,
  );
  console.log(
    `clone datasets:          before ${before.clones}, mapped ${mapped.clones}, after ${after.clones}, after the script ${afterScript.clones}`,
  );
  console.log(`errors ${errors}; leaked targets ${leaked.targets}, leaked clones ${leaked.clones}`);
  for (const error of new Set(outcomes.flatMap((o) => o.errors))) console.log(`  error: ${error}`);
  exitCode =
    errors === 0 && leaked.targets === 0 && leaked.clones === 0 && mapped.targets === volumes - maps.errors.length
      ? 0
      : 1;
} finally {
  orchestrator.kill('SIGTERM');
  for (const group of workerGroups) await group.stop();
  await connection.close();
  pool.destroy();
  releaseTgtd();
  releaseZfs();
  fs.rmSync(scratch, { recursive: true, force: true });
}
process.exit(exitCode);
