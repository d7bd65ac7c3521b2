/**
 * Orchestration's share of a map's wall time. N cycles of map, unmap and delete through the
 * volume workflow (real workers in this process: qcow2 store, no export, local attach, as in
 * map-latency), alternated with N cycles of the same steps called directly in a script: the same
 * activity code, so the same commands through the same runner (clone, export, attach, and detach,
 * unexport, destroy) and the same file work, without Temporal. Every command both paths issue is
 * recorded and the two sequences compared, so the difference is orchestration alone.
 *
 * Prints, per operation, the medians of the imgflow path, of the direct path and of the time spent
 * in commands, and the share of imgflow's wall time that is orchestration.
 *
 *   IMGFLOW_HOME=$(mktemp -d) npm run bench -- bench/map-share.ts [N]
 */
import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import { createComputeActivities } from '../activities/compute/index.js';
import { createHostActivities } from '../activities/host.js';
import { createNasVolumeActivities } from '../activities/nas/volumes.js';
import { createRunner, type Run } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { computeSettings, loadConfig, machineArch, nasSettings, paths } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { createLogger } from '../lib/logger.js';
import { ensureClient } from '../starters/client.js';
import { mapVolume, volumeHandle } from '../starters/volume-client.js';
import { installRuntime } from '../workers/runtime.js';
import { createWorker } from '../workers/worker.js';
import { deleteUpdate, unmapUpdate, type MapRequest } from '../workflows/volume/messages.js';
import { directDelete, directMap, directUnmap } from './direct-volume.js';
import { median, ms } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '20', 3, 1000);
const MiB = 1024 * 1024;
const OPS = ['map', 'unmap', 'delete'] as const;
type Op = (typeof OPS)[number];

// The store and attach kinds of map-latency, whatever this shell's environment says.
const env: NodeJS.ProcessEnv = {};
const config = loadConfig();
const logger = createLogger('bench', 'error');
const baseRun = createRunner(logger);

/** Every command of the current operation, with the volume's name made generic, and its time. */
let commands: string[] = [];
let commandMs = 0;
let volumeName = '';
const run: Run = async (argv, options) => {
  const result = await baseRun(argv, options);
  commands.push(argv.join(' ').split(volumeName).join('<volume>'));
  commandMs += result.durationMs;
  return result;
};

const nas = createNasVolumeActivities({ run, config, settings: nasSettings(env) });
const compute = createComputeActivities({ run, config, settings: computeSettings(env) });
const hosts = { nas, compute };
const host = (role: 'nas' | 'compute') => createHostActivities({ role, config, arch: machineArch(), run });

const { client, connection } = await ensureClient(config);
installRuntime(logger, '');
const workerConnection = await NativeConnection.connect(connectionSettings(config));
const workers = await Promise.all([
  createWorker({ role: 'orchestrator', config, arch: machineArch(), connection: workerConnection, logger }),
  createWorker({
    role: 'nas',
    config,
    arch: machineArch(),
    connection: workerConnection,
    logger,
    activities: { ...host('nas'), ...nas },
  }),
  createWorker({
    role: 'compute',
    config,
    arch: machineArch(),
    connection: workerConnection,
    logger,
    activities: { ...host('compute'), ...compute },
  }),
]);
const running = workers.map(({ worker }) => worker.run());

/** A fully written 100 MiB qcow2 base in the NAS's store, as a build leaves it. */
const image = `share-${Date.now().toString(36)}`;
const file = path.join(paths(config).nas(config.host), 'store', image, 'v1', `${image}-v1.qcow2`);
fs.mkdirSync(path.dirname(file), { recursive: true });
await baseRun(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(100 * MiB)]);
await baseRun(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a 0 ${100 * MiB}`, file]);
const request: MapRequest = {
  by: 'bench',
  base: { image, version: 'v1', artifact: { format: 'qcow2', host: config.host, path: file } },
  nas: config.host,
  computeHost: config.host,
};

interface Sample {
  ms: number;
  commandMs: number;
  commands: string[];
}

/** Runs one operation of one volume, recording its wall time, its commands and their time. */
async function measure(volume: string, fn: () => Promise<unknown>): Promise<Sample> {
  commands = [];
  commandMs = 0;
  volumeName = volume;
  const started = performance.now();
  await fn();
  return { ms: performance.now() - started, commandMs, commands };
}

async function throughImgflow(volume: string): Promise<Record<Op, Sample>> {
  const handle = () => volumeHandle(client, volume);
  return {
    map: await measure(volume, () => mapVolume(client, volume, request)),
    unmap: await measure(volume, () => handle().executeUpdate(unmapUpdate, { args: [{ by: 'bench' }] })),
    delete: await measure(volume, () => handle().executeUpdate(deleteUpdate, { args: [{ by: 'bench' }] })),
  };
}

/** The saga's steps in the workflow's order, called one after the other. */
async function direct(volume: string): Promise<Record<Op, Sample>> {
  let url = '';
  return {
    map: await measure(volume, async () => (url = await directMap(hosts, volume, request.base))),
    unmap: await measure(volume, () => directUnmap(hosts, volume, url)),
    delete: await measure(volume, () => directDelete(hosts, volume)),
  };
}

// Warm-up, not counted: the base's import, the workflow bundle, connections and caches.
await throughImgflow(`${image}-warm`);
await direct(`${image}-warm-direct`);

const samples = { imgflow: [] as Record<Op, Sample>[], direct: [] as Record<Op, Sample>[] };
for (let i = 0; i < n; i++) {
  samples.imgflow.push(await throughImgflow(`${image}-${i}`));
  samples.direct.push(await direct(`${image}-d${i}`));
}
for (const { worker } of workers) worker.shutdown();
await Promise.allSettled(running);
await workerConnection.close();
await connection.close();

const all = [...samples.imgflow, ...samples.direct];
const same = OPS.every((op) => all.every((s) => s[op].commands.join('\n') === all[0]![op].commands.join('\n')));
const cycle = (s: Record<Op, Sample>): Sample => ({
  ms: OPS.reduce((sum, op) => sum + s[op].ms, 0),
  commandMs: OPS.reduce((sum, op) => sum + s[op].commandMs, 0),
  commands: OPS.flatMap((op) => s[op].commands),
});

function row(label: string, pick: (s: Record<Op, Sample>) => Sample): string {
  const imgflow = median(samples.imgflow.map((s) => pick(s).ms));
  const plain = median(samples.direct.map((s) => pick(s).ms));
  const inCommands = median(samples.direct.map((s) => pick(s).commandMs));
  const share = `${(((imgflow - plain) / imgflow) * 100).toFixed(0)}%`;
  return `${label.padEnd(9)} ${ms(imgflow)} ${ms(plain)} ${ms(inCommands)} ${ms(imgflow - plain, 14)} ${share.padStart(6)} ${String(pick(all[0]!).commands.length).padStart(9)}`;
}

console.log(
  `map, unmap and delete through imgflow vs the same steps called directly (qcow2 store, export none, local attach), N=${n}, server ${config.address}`,
);
console.log(`operation  imgflow   direct commands  orchestration  share  commands   (medians, ms)`);
for (const op of OPS) console.log(row(op, (s) => s[op]));
console.log(row('cycle', cycle));
console.log(
  `direct = the same activity code without Temporal; "commands" = its time inside commands, the rest of direct is in-process work (file checks, the /proc scan for holders before a detach)`,
);
console.log(`both paths issued the same commands in the same order: ${same ? 'yes' : 'NO'}`);
for (const op of OPS) for (const argv of all[0]![op].commands) console.log(`  ${op.padEnd(7)} ${argv}`);
process.exit(same ? 0 : 1);
