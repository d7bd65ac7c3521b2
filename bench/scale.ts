/**
 * imgflow at site scale on the production cluster (Temporal on PostgreSQL, a process per service,
 * mutual TLS and tokens), brought up as `imgflow cluster up --compute` does: nas-0, control-0 (the
 * orchestrator) and the first compute hosts each in a network namespace of its own, reaching the
 * frontend across the cluster's bridge; the other NAS and compute hosts are worker identities,
 * each on its own queue with its own certificate and token, the NAS hosts sharing one process and
 * the compute hosts another. Every NAS has its own tgtd.
 *
 * Images: each a lineage with its versions (small qcow2 files in its NAS's store). Volumes are
 * mapped as the CLI maps them (the version resolved by its lineage, then update-with-start of the
 * volume's workflow), then unmapped, then deleted, in waves at concurrency 1, 2, 4 ... until
 * throughput grows less than 10% over the step before, the volume budget is spent or the time
 * budget runs out; first on ZFS (zfs-fuse) exported through tgtd and attached through libiscsi,
 * then on qcow2 files (no export: the compute host opens the file).
 *
 * Printed per step: operations per second, map/unmap/delete p50/p95/p99, errors, clones and
 * targets left behind (from the storage driver's listing and tgtadm's; must be zero), CPU seconds
 * per operation by process (each Temporal service, the PostgreSQL backends of the cluster's
 * databases, each worker process and its commands, tgtd, zfs-fuse, the bench's client), history
 * events and bytes per operation (from a sample of the step's volume workflows) and database
 * growth per operation. Then a plot (gnuplot): throughput and p95 against concurrency per driver,
 * and CPU per operation by process at saturation. Exit code 1 on any error or leak.
 *
 *   npm run bench -- bench/scale.ts --quick          # about ten minutes: 2 NAS, 12 compute hosts, 20 images
 *   npm run bench -- bench/scale.ts                  # 10 NAS, 200 compute hosts, 1,000 images, 5,000 volumes
 *   npm run bench -- bench/scale.ts --help           # every size and bound
 *
 * As root (namespaces, tgtd, zfs-fuse). Traffic stays on loopback and the cluster's own bridge.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { createRunner, type Run } from '../activities/runner.js';
import { createStorage } from '../activities/drivers/index.js';
import { parseTgtShow } from '../activities/drivers/export/tgt.js';
import { DEFAULT_IQN_PREFIX, volumeOfTarget } from '../activities/drivers/naming.js';
import { nasStorageConfig } from '../activities/nas/volumes.js';
import { checkInt, InputError } from '../common/names.js';
import { loadConfig, nasSettings } from '../lib/config.js';
import { createKeyring } from '../lib/keyring.js';
import { createLogger } from '../lib/logger.js';
import { DEFAULT_POSTGRES_URL, parsePostgresUrl } from '../starters/cluster/database.js';
import { connectClient } from '../starters/client.js';
import { oneLine } from '../starters/output.js';
import { baseVersion, mapVolume, volumeHandle } from '../starters/volume-client.js';
import { deleteUpdate, unmapUpdate } from '../workflows/volume/messages.js';
import { cpuBetween, sampleCpu, zfsFusePids, type CpuSample } from './scale/cpu.js';
import { backendPids, dbSizes, type DbSizes } from './scale/database.js';
import { makeImages, type ScaleImage } from './scale/images.js';
import { plot } from './scale/plot.js';
import {
  nasEnv,
  scaleSiteDown,
  scaleSiteUp,
  setDriver,
  siteProcesses,
  type Driver,
  type NasHost,
  type ScaleSite,
} from './scale/site.js';
import { percentile } from './stats.js';

// ---------------------------------------------------------------------------------------------
// Sizes and bounds

interface Sizes {
  nas: number;
  compute: number;
  namespaced: number;
  images: number;
  versions: number;
  clonedImages: number;
  volumes: number;
  perLane: number;
  minStep: number;
  maxConcurrency: number;
  minutes: number;
  drivers: Driver[];
  out: string;
}

const FULL = {
  nas: 10,
  compute: 200,
  namespaced: 4,
  images: 1000,
  versions: 2,
  clonedImages: 100,
  volumes: 5000,
  perLane: 10,
  minStep: 40,
  maxConcurrency: 256,
  minutes: 30,
};
const QUICK: typeof FULL = {
  nas: 2,
  compute: 12,
  namespaced: 2,
  images: 20,
  versions: 2,
  clonedImages: 20,
  volumes: 400,
  perLane: 4,
  minStep: 12,
  maxConcurrency: 32,
  minutes: 3,
};
const GROWTH = 1.1;

const HELP = `bench/scale.ts [--quick] [--nas N] [--compute N] [--namespaced N] [--images N] [--versions N]
  [--cloned-images N] [--volumes N] [--per-lane N] [--min-step N] [--max-concurrency N] [--minutes M]
  [--drivers zfs,qcow2] [--out DIR]
defaults (full): ${JSON.stringify(FULL)}
--quick:         ${JSON.stringify(QUICK)}
--volumes and --minutes bound each driver; a step maps max(--min-step, concurrency x --per-lane) volumes.`;

function parseSizes(argv: string[]): Sizes {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      help: { type: 'boolean' },
      nas: { type: 'string' },
      compute: { type: 'string' },
      namespaced: { type: 'string' },
      images: { type: 'string' },
      versions: { type: 'string' },
      'cloned-images': { type: 'string' },
      volumes: { type: 'string' },
      'per-lane': { type: 'string' },
      'min-step': { type: 'string' },
      'max-concurrency': { type: 'string' },
      minutes: { type: 'string' },
      drivers: { type: 'string' },
      out: { type: 'string' },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const base = values.quick ? QUICK : FULL;
  const int = (flag: keyof typeof FULL, name: string, min: number, max: number) =>
    checkInt(`--${name}`, values[name as keyof typeof values] ?? base[flag], min, max);
  const sizes = {
    nas: int('nas', 'nas', 1, 50),
    compute: int('compute', 'compute', 1, 1000),
    namespaced: int('namespaced', 'namespaced', 1, 16),
    images: int('images', 'images', 1, 10_000),
    versions: int('versions', 'versions', 1, 20),
    clonedImages: int('clonedImages', 'cloned-images', 1, 10_000),
    volumes: int('volumes', 'volumes', 1, 100_000),
    perLane: int('perLane', 'per-lane', 1, 1000),
    minStep: int('minStep', 'min-step', 1, 10_000),
    maxConcurrency: int('maxConcurrency', 'max-concurrency', 1, 1024),
    minutes: int('minutes', 'minutes', 1, 600),
  };
  const drivers = (values.drivers ?? 'zfs,qcow2').split(',');
  for (const d of drivers) if (d !== 'zfs' && d !== 'qcow2') throw new InputError('--drivers', 'zfs and/or qcow2', d);
  if (sizes.namespaced > sizes.compute) throw new InputError('--namespaced', `at most --compute (${sizes.compute})`);
  return {
    ...sizes,
    clonedImages: Math.min(sizes.clonedImages, sizes.images),
    drivers: drivers as Driver[],
    out: path.resolve(values.out ?? path.join('bench', 'results')),
  };
}

// ---------------------------------------------------------------------------------------------
// Waves

interface Outcome {
  times: number[];
  errors: string[];
  done: string[];
  /** The wave's wall time, in seconds. */
  wallS: number;
}

/** Runs `op` on every item, `concurrency` at once; no new item starts past `deadline`. Failures are kept. */
async function wave(
  items: readonly string[],
  concurrency: number,
  deadline: number,
  op: (item: string) => Promise<unknown>,
): Promise<Outcome> {
  const outcome: Outcome = { times: [], errors: [], done: [], wallS: 0 };
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < items.length && Date.now() < deadline; i = next++) {
      const started = performance.now();
      try {
        await op(items[i]!);
        outcome.times.push(performance.now() - started);
        outcome.done.push(items[i]!);
      } catch (err) {
        outcome.errors.push(oneLine(err));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  outcome.wallS = (performance.now() - started) / 1000;
  return outcome;
}

// ---------------------------------------------------------------------------------------------
// What the tools list

interface Census {
  volumes: number;
  targets: number;
}

async function census(run: Run, site: ScaleSite, driver: Driver, prefix: string): Promise<Census> {
  let volumes = 0;
  let targets = 0;
  for (const nas of site.nas) {
    const config = loadConfig({ home: nas.home, host: nas.host, metricsAddress: '' }, {});
    const storage = createStorage(nasStorageConfig(run, config, nasSettings(nasEnv(nas, driver))));
    volumes += (await storage.list()).filter((v) => v.startsWith(prefix)).length;
    targets += await targetsOf(run, nas, prefix);
  }
  return { volumes, targets };
}

/** Every target of this NAS's tgtd whose volume starts with `prefix` (either driver: none may be left). */
async function targetsOf(run: Run, nas: NasHost, prefix: string): Promise<number> {
  const shown = await run([
    'tgtadm',
    '-C',
    String(nas.tgt.controlPort),
    '--lld',
    'iscsi',
    '--op',
    'show',
    '--mode',
    'target',
  ]);
  return parseTgtShow(shown.stdout).filter((t) =>
    volumeOfTarget(DEFAULT_IQN_PREFIX, nas.host, t.iqn)?.startsWith(prefix),
  ).length;
}

// ---------------------------------------------------------------------------------------------
// One step

interface Step {
  driver: Driver;
  concurrency: number;
  volumes: number;
  maps: Outcome;
  unmaps: Outcome;
  deletes: Outcome;
  wallS: number;
  ops: number;
  opsPerSecond: number;
  mapped: Census;
  left: Census;
  cpu: CpuSample;
  history: { events: number; bytes: number; sampled: number };
  db: DbSizes;
}

interface Context {
  run: Run;
  client: Client;
  site: ScaleSite;
  images: ScaleImage[];
  sizes: Sizes;
  prefix: string;
  pg: ReturnType<typeof parsePostgresUrl>;
  processes: () => Promise<{ name: string; pids: number[] }[]>;
}

const BY = { by: 'scale-bench' };

/** Maps volume `name` (its index picks image and compute host) as the CLI does: the version resolved by the lineage. */
async function mapOne(ctx: Context, name: string, index: number): Promise<void> {
  const image = ctx.images[index % ctx.sizes.clonedImages]!;
  const compute = ctx.site.compute[index % ctx.site.compute.length]!.host;
  const base = await baseVersion(ctx.client, `${image.image}:v${image.versions}`, image.nas);
  await mapVolume(ctx.client, name, { ...BY, base, nas: image.nas, computeHost: compute });
}

const unmapOne = (ctx: Context, name: string) =>
  volumeHandle(ctx.client, name).executeUpdate(unmapUpdate, { args: [BY] });
const deleteOne = (ctx: Context, name: string) =>
  volumeHandle(ctx.client, name).executeUpdate(deleteUpdate, { args: [BY] });

const HISTORY_SAMPLE = 12;

async function historyOf(ctx: Context, names: string[]): Promise<Step['history']> {
  const sample = names
    .filter((_, i) => i % Math.max(1, Math.floor(names.length / HISTORY_SAMPLE)) === 0)
    .slice(0, HISTORY_SAMPLE);
  let events = 0;
  let bytes = 0;
  for (const name of sample) {
    const d = await volumeHandle(ctx.client, name).describe();
    events += d.historyLength;
    bytes += d.historySize ?? 0;
  }
  return { events: events / (sample.length || 1), bytes: bytes / (sample.length || 1), sampled: sample.length };
}

function dbDelta(a: DbSizes, b: DbSizes): DbSizes {
  return { temporal: b.temporal - a.temporal, visibility: b.visibility - a.visibility, history: b.history - a.history };
}

async function runStep(
  ctx: Context,
  driver: Driver,
  concurrency: number,
  count: number,
  first: number,
  deadline: number,
): Promise<Step> {
  const prefix = `${ctx.prefix}-${driver === 'zfs' ? 'z' : 'q'}c${concurrency}-`;
  const names = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const index = new Map(names.map((n, i) => [n, first + i]));
  const cpu0 = sampleCpu(await ctx.processes());
  const db0 = await dbSizes(ctx.run, ctx.pg, ctx.site.up.cluster.state.databases);
  const started = performance.now();
  const maps = await wave(names, concurrency, deadline, (n) => mapOne(ctx, n, index.get(n)!));
  const mapped = await census(ctx.run, ctx.site, driver, prefix);
  // Cleaning up is never cut short by the deadline: every volume the step touched is unmapped and deleted.
  const attempted = names.slice(0, maps.done.length + maps.errors.length);
  const unmaps = await wave(attempted, concurrency, Infinity, (n) => unmapOne(ctx, n));
  const deletes = await wave(attempted, concurrency, Infinity, (n) => deleteOne(ctx, n));
  const wallS = (performance.now() - started) / 1000;
  const cpu = cpuBetween(cpu0, sampleCpu(await ctx.processes()));
  const db = dbDelta(db0, await dbSizes(ctx.run, ctx.pg, ctx.site.up.cluster.state.databases));
  const left = await census(ctx.run, ctx.site, driver, prefix);
  const history = await historyOf(ctx, deletes.done);
  const ops = maps.done.length + unmaps.done.length + deletes.done.length;
  return {
    driver,
    concurrency,
    volumes: attempted.length,
    maps,
    unmaps,
    deletes,
    wallS,
    ops,
    opsPerSecond: ops / wallS,
    mapped,
    left,
    cpu,
    history,
    db,
  };
}

// ---------------------------------------------------------------------------------------------
// Printing

const f1 = (x: number, w = 7) => (Number.isFinite(x) ? x.toFixed(1) : '-').padStart(w);
const pct = (o: Outcome) => [0.5, 0.95, 0.99].map((p) => f1(percentile(o.times, p), 6)).join(' ');
const errorsOf = (s: Step) => s.maps.errors.length + s.unmaps.errors.length + s.deletes.errors.length;
const cpuTotal = (s: Step) => [...s.cpu.values()].reduce((a, c) => a + c.own + c.children, 0);

const STEP_HEADER = `driver conc  vols   ops/s  map/s  unmap/s  del/s | map p50 p95 p99 (ms)  | unmap p50 p95 p99    | errs leaked:clones targets | cpu s/op | events/op  KiB/op | db KiB/op`;

function stepLine(s: Step): string {
  const per = (x: number) => x / Math.max(1, s.ops);
  const rate = (o: Outcome) => f1(o.done.length / o.wallS, 6);
  return [
    `${s.driver.padEnd(6)} ${String(s.concurrency).padStart(4)} ${String(s.volumes).padStart(5)} ${f1(s.opsPerSecond)} ${rate(s.maps)} ${rate(s.unmaps)}  ${rate(s.deletes)}`,
    `| ${pct(s.maps)}   | ${pct(s.unmaps)} `,
    `| ${String(errorsOf(s)).padStart(4)} ${String(s.left.volumes).padStart(13)} ${String(s.left.targets).padStart(7)}`,
    `| ${per(cpuTotal(s)).toFixed(3).padStart(8)}`,
    `| ${f1(s.history.events / 3, 9)} ${f1(s.history.bytes / 3 / 1024, 7)}`,
    `| ${f1(per(s.db.temporal + s.db.visibility) / 1024, 9)}`,
  ].join(' ');
}

/** Where the step's CPU went, one line: ms per operation by process (its commands included), largest first. */
function cpuLine(s: Step): string {
  const rows = [...s.cpu].map(
    ([name, c]) => [name.replace(/ \(.*\)$/, ''), (1000 * (c.own + c.children)) / Math.max(1, s.ops)] as const,
  );
  return `  cpu ms/op: ${rows
    .sort((a, b) => b[1] - a[1])
    .map(([name, ms]) => `${name} ${ms.toFixed(0)}`)
    .join(', ')}`;
}

function cpuTable(s: Step): string[] {
  const rows = [...s.cpu].sort((a, b) => b[1].own + b[1].children - (a[1].own + a[1].children));
  const total = cpuTotal(s);
  return [
    `  CPU per operation, ${s.driver} at concurrency ${s.concurrency} (${s.ops} operations in ${s.wallS.toFixed(1)} s; machine: ${os.cpus().length} cores, ${(total / s.wallS).toFixed(2)} cores busy with these)`,
    `  ${'process'.padEnd(38)} ${'own ms/op'.padStart(10)} ${'commands ms/op'.padStart(15)} ${'share'.padStart(6)} ${'cores'.padStart(6)}`,
    ...rows.map(
      ([name, c]) =>
        `  ${name.padEnd(38)} ${f1((1000 * c.own) / s.ops, 10)} ${f1((1000 * c.children) / s.ops, 15)} ${f1((100 * (c.own + c.children)) / (total || 1), 5)}% ${((c.own + c.children) / s.wallS).toFixed(2).padStart(6)}`,
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// The run

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('bench/scale.ts runs as root (network namespaces, tgtd, zfs-fuse)');
}

async function main(): Promise<number> {
  const sizes = parseSizes(process.argv.slice(2));
  requireRoot();
  const say = (line: string) => console.error(`scale: ${line}`);
  const logger = createLogger('bench-scale', 'error');
  const run = createRunner(logger);
  for (const tool of ['tgtd', 'tgtadm', 'zfs', 'psql', 'gnuplot', 'qemu-img'])
    if ((await run(['sh', '-c', `command -v ${tool}`], { okExitCodes: [1, 127] })).exitCode !== 0)
      throw new Error(`${tool} is missing: run scripts/setup.sh`);
  const stamp = randomBytes(3).toString('hex');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-scale-'));
  const codecKeys = path.join(root, 'keys', 'codec.json');
  createKeyring(codecKeys);
  const pg = parsePostgresUrl(process.env.IMGFLOW_POSTGRES_URL ?? DEFAULT_POSTGRES_URL);
  const sizeLine = `${sizes.nas} NAS hosts, ${sizes.compute} compute hosts (${sizes.namespaced} in network namespaces of their own), ${sizes.images} images x ${sizes.versions} versions (volumes cloned from the newest version of ${sizes.clonedImages}), up to ${sizes.volumes} volumes and ${sizes.minutes} min per driver, concurrency 1..${sizes.maxConcurrency}, drivers ${sizes.drivers.join(', ')}`;
  say(`size: ${sizeLine}`);
  const began = Date.now();
  let site: ScaleSite | undefined;
  let connection: { close(): Promise<void> } | undefined;
  const steps: Step[] = [];
  let failed = false;
  try {
    site = await scaleSiteUp({
      dir: path.join(root, 'cluster'),
      name: `scale-${stamp}`,
      codecKeys,
      nas: sizes.nas,
      compute: sizes.compute,
      namespacedCompute: sizes.namespaced,
      run,
      say,
    });
    const operator = site.up.cluster.operator;
    const opened = await connectClient(
      loadConfig(
        {
          address: operator.address,
          tls: operator.tls,
          apiKeyFile: operator.apiKeyFile,
          home: path.join(root, 'client'),
          host: 'scale-bench',
          namespace: 'imgflow',
          codecKeys,
          metricsAddress: '',
        },
        {},
      ),
    );
    connection = opened.connection;
    const registering = performance.now();
    const images = await makeImages(opened.client, run, {
      prefix: `sc${stamp}`,
      count: sizes.images,
      versions: sizes.versions,
      nas: site.nas,
      scratch: path.join(root, 'images'),
      lanes: 16,
    });
    const registerS = (performance.now() - registering) / 1000;
    say(
      `${sizes.images} images, ${sizes.images * sizes.versions} versions registered in ${registerS.toFixed(1)} s (${((sizes.images * sizes.versions) / registerS).toFixed(1)} lineage updates/s)`,
    );
    const s = site;
    const ctx: Context = {
      run,
      client: opened.client,
      site: s,
      images,
      sizes,
      prefix: `sc${stamp}`,
      pg,
      processes: async () => [
        ...siteProcesses(s),
        { name: 'postgres (cluster backends)', pids: await backendPids(run, pg, s.up.cluster.state.databases) },
        { name: 'zfs-fuse (machine-wide)', pids: zfsFusePids() },
        { name: 'bench client (CLI calls)', pids: [process.pid] },
      ],
    };
    const idle = await idleCost(ctx);
    for (const driver of sizes.drivers) {
      await setDriver(s, driver, say);
      const deadline = Date.now() + sizes.minutes * 60_000;
      await warmUp(ctx, driver, say);
      console.log(`\n${driver}: ${sizeLine}`);
      console.log(STEP_HEADER);
      let used = 0;
      let previous: Step | undefined;
      for (let c = 1; c <= sizes.maxConcurrency && used < sizes.volumes && Date.now() < deadline; c *= 2) {
        const count = Math.min(Math.max(sizes.minStep, c * sizes.perLane), sizes.volumes - used);
        const step = await runStep(ctx, driver, c, count, used, deadline);
        used += step.volumes;
        steps.push(step);
        console.log(stepLine(step));
        console.log(cpuLine(step));
        if (errorsOf(step) || step.left.volumes || step.left.targets) failed = true;
        for (const e of new Set([...step.maps.errors, ...step.unmaps.errors, ...step.deletes.errors].slice(0, 5)))
          console.log(`  error: ${e.slice(0, 300)}`);
        if (previous && step.opsPerSecond < previous.opsPerSecond * GROWTH) break;
        previous = step;
      }
    }
    report(steps, sizeLine, registerS, sizes);
    printIdle(idle);
    const png = await plot(run, {
      dir: sizes.out,
      title: `imgflow on a Temporal cluster (PostgreSQL, mTLS): ${sizes.nas} NAS, ${sizes.compute} compute hosts, ${sizes.images} images; ${os.cpus().length} cores`,
      steps: steps.map((st) => ({
        driver: st.driver,
        concurrency: st.concurrency,
        opsPerSecond: st.opsPerSecond,
        mapP95Ms: percentile(st.maps.times, 0.95),
      })),
      cpu: saturationCpu(steps),
    });
    console.log(`\nplot: ${png}`);
  } finally {
    await connection?.close().catch(() => undefined);
    const down = site
      ? await scaleSiteDown(site, run, say).then(
          () => true,
          (err: Error) => (say(`taking the site down: ${oneLine(err).slice(0, 400)}; ${root} is kept`), false),
        )
      : true;
    if (down) fs.rmSync(root, { recursive: true, force: true });
    else failed = true;
    say(`done in ${((Date.now() - began) / 60_000).toFixed(1)} min`);
  }
  return failed ? 1 : 0;
}

const IDLE_SECONDS = 30;

/** What the site costs with nothing to do: every worker polling, no operation. */
async function idleCost(ctx: Context): Promise<{ seconds: number; cpu: CpuSample }> {
  const before = sampleCpu(await ctx.processes());
  await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
  return { seconds: IDLE_SECONDS, cpu: cpuBetween(before, sampleCpu(await ctx.processes())) };
}

function printIdle({ seconds, cpu }: { seconds: number; cpu: CpuSample }): void {
  const rows = [...cpu].filter(([name]) => !name.startsWith('bench client'));
  const total = rows.reduce((a, [, c]) => a + c.own + c.children, 0);
  console.log(
    `\nidle, ${seconds} s with every worker polling and no operation: ${(total / seconds).toFixed(3)} cores in all`,
  );
  for (const [name, c] of rows.sort((a, b) => b[1].own + b[1].children - (a[1].own + a[1].children)))
    console.log(`  ${name.padEnd(38)} ${((c.own + c.children) / seconds).toFixed(3).padStart(6)} cores`);
}

const WARM_UP_LANES = 16;

/** One map, unmap and delete per cloned image (its base imported on its NAS), not counted. */
async function warmUp(ctx: Context, driver: Driver, say: (line: string) => void): Promise<void> {
  const count = ctx.sizes.clonedImages;
  const prefix = `${ctx.prefix}-${driver === 'zfs' ? 'z' : 'q'}warm-`;
  const names = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const started = performance.now();
  const out = await wave(names, WARM_UP_LANES, Infinity, async (n) => {
    await mapOne(ctx, n, Number(n.slice(prefix.length)));
    await unmapOne(ctx, n);
    await deleteOne(ctx, n);
  });
  say(
    `${driver}: warm-up, ${count} volumes mapped, unmapped and deleted in ${((performance.now() - started) / 1000).toFixed(1)} s (each base imported on its NAS); ${out.errors.length} errors${out.errors[0] ? `: ${out.errors[0].slice(0, 200)}` : ''}`,
  );
  if (out.errors.length)
    throw new Error(`the warm-up failed ${out.errors.length} times: ${out.errors[0]!.slice(0, 300)}`);
}

function saturationStep(steps: Step[], driver: Driver): Step | undefined {
  return steps.filter((s) => s.driver === driver).sort((a, b) => b.opsPerSecond - a.opsPerSecond)[0];
}

function saturationCpu(steps: Step[]): { drivers: string[]; rows: { process: string; perOp: number[] }[] } {
  const drivers = [...new Set(steps.map((s) => s.driver))];
  const saturated = drivers.map((d) => saturationStep(steps, d)!);
  const names = [...new Set(saturated.flatMap((s) => [...s.cpu.keys()]))];
  return {
    drivers,
    rows: names.map((process) => ({
      process,
      perOp: saturated.map((s) => {
        const c = s.cpu.get(process);
        return c ? (c.own + c.children) / Math.max(1, s.ops) : 0;
      }),
    })),
  };
}

const kib = (bytes: number, ops: number) => (bytes / 1024 / Math.max(1, ops)).toFixed(1);

function report(steps: Step[], sizeLine: string, registerS: number, sizes: Sizes): void {
  console.log(`\nsize: ${sizeLine}; images registered in ${registerS.toFixed(1)} s`);
  console.log(STEP_HEADER);
  for (const s of steps) console.log(stepLine(s));
  console.log(
    `ops = maps + unmaps + deletes done; latencies in ms; events/op and KiB/op from ${HISTORY_SAMPLE} sampled volume workflows' histories (one map, unmap and delete each) / 3; db = temporal + visibility databases' growth; leaked = volumes and targets of the step still listed after its deletes`,
  );
  for (const driver of sizes.drivers) {
    const s = saturationStep(steps, driver);
    if (!s) continue;
    console.log(`\n${driver}: saturation at concurrency ${s.concurrency}: ${s.opsPerSecond.toFixed(1)} ops/s`);
    for (const line of cpuTable(s)) console.log(line);
    console.log(
      `  history: ${s.history.events.toFixed(0)} events, ${(s.history.bytes / 1024).toFixed(1)} KiB per volume (map+unmap+delete); per operation the databases grew: history_node ${kib(s.db.history, s.ops)}, the rest of the history database ${kib(s.db.temporal - s.db.history, s.ops)}, visibility ${kib(s.db.visibility, s.ops)} KiB`,
    );
  }
}

process.exit(
  await main().catch((err: Error) => {
    console.error(`scale: ${oneLine(err)}`);
    return 1;
  }),
);
