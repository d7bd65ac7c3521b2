/**
 * Which of the SDK's settings explain how much of orchestration's cost per activity. The
 * one-activity workflow of orchestration-overhead.ts (`pingWorkflow`, its activity running
 * `qemu-img --version` through the real runner) under variants that each change one thing from the
 * SDK's defaults; every variant has workers of its own on queues of its own, all running at once,
 * and the variants take turns run by run, so drift in the machine's load falls on all of them
 * alike (each round starts at another one). Each run is timed spaced (200 ms idle before it) and back to back; prints per variant the
 * medians and the difference from the defaults, and the command run directly as the anchor.
 *
 *   IMGFLOW_HOME=$(mktemp -d) TEMPORAL_ADDRESS=127.0.0.1:<free port> npm run bench -- bench/overhead-settings.ts [N]
 */
import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { Context } from '@temporalio/activity';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { imgflowDataConverter } from '../lib/codec.js';
import { loadConfig, machineArch } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { createLogger } from '../lib/logger.js';
import { ensureClient } from '../starters/client.js';
import { planRole } from '../workers/roles.js';
import { installRuntime } from '../workers/runtime.js';
import { workflowBundle } from '../workers/worker.js';
import { pingWorkflow } from '../workflows/ping.js';
import { median, ms, timed } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '40', 5, 10_000);
const GAP_MS = 200;

interface Variant {
  name: string;
  /** Worker options over the SDK's defaults: the orchestrator's, and the host worker's. */
  orchestrator?: Partial<WorkerOptions>;
  host?: Partial<WorkerOptions>;
  /** The activity on the workflow's own queue, run by the orchestrator's worker (what eager activity dispatch needs). */
  oneQueue?: boolean;
  /** The client on the workers' NativeConnection instead of its own gRPC connection, with or without eager start. */
  nativeClient?: boolean;
  eagerStart?: boolean;
  /** No payload codec: payloads in plain JSON. */
  plain?: boolean;
  /** The activity's heartbeats dropped (the runner beats once as a command starts, then every second). */
  noHeartbeat?: boolean;
}

const variants: Variant[] = [
  { name: 'SDK defaults (as the workers run)' },
  { name: 'client on the workers\u2019 connection', nativeClient: true },
  { name: 'eager workflow start', nativeClient: true, eagerStart: true },
  { name: 'activity on the workflow queue', oneQueue: true },
  {
    name: '  same, eager activity dispatch off',
    oneQueue: true,
    orchestrator: { maxEagerActivityReservationsPerWorkflowTask: 0 },
  },
  { name: 'no workflow cache (maxCachedWorkflows 0)', orchestrator: { maxCachedWorkflows: 0 } },
  {
    name: 'pollers: 1 workflow, 1 activity',
    orchestrator: {
      workflowTaskPollerBehavior: { type: 'simple-maximum', maximum: 2 },
      nonStickyToStickyPollRatio: 0.5,
    },
    host: { activityTaskPollerBehavior: { type: 'simple-maximum', maximum: 1 } },
  },
  {
    name: 'pollers: autoscaling',
    orchestrator: { workflowTaskPollerBehavior: { type: 'autoscaling' } },
    host: { activityTaskPollerBehavior: { type: 'autoscaling' } },
  },
  { name: 'workflow threads: 2', orchestrator: { workflowThreadPoolSize: 2 } },
  { name: 'no payload codec', plain: true },
  { name: 'activity without heartbeats', noHeartbeat: true },
];

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client: grpcClient, connection: grpcConnection } = await ensureClient(config);
installRuntime(logger, '');
const connection = await NativeConnection.connect(connectionSettings(config));
const arch = machineArch();
const nasPlan = planRole('nas', config, arch, logger);
const bundle = await workflowBundle();
const workers: Worker[] = [];

interface Prepared {
  variant: Variant;
  run: () => Promise<unknown>;
  spaced: number[];
  backToBack: number[];
  /** Runs the server started eagerly (their first workflow task in the start's answer). */
  eager: number;
}

async function prepare(variant: Variant): Promise<Prepared> {
  const id = randomUUID().slice(0, 8);
  const workflowQueue = `bench-wf-${id}`;
  const hostQueue = variant.oneQueue ? workflowQueue : `bench-host-${id}`;
  const dataConverter = variant.plain ? {} : imgflowDataConverter(config);
  const activities = variant.noHeartbeat
    ? Object.fromEntries(
        Object.entries(nasPlan.activities).map(([name, fn]) => [
          name,
          (...args: never[]) => {
            Object.assign(Context.current(), { heartbeat: () => {} });
            return fn(...args);
          },
        ]),
      )
    : nasPlan.activities;
  const common = { connection, namespace: config.namespace, dataConverter, shutdownGraceTime: '30s' };
  workers.push(
    await Worker.create({
      ...common,
      taskQueue: workflowQueue,
      workflowBundle: bundle,
      ...(variant.oneQueue ? { activities } : {}),
      ...variant.orchestrator,
    }),
  );
  if (!variant.oneQueue)
    workers.push(await Worker.create({ ...common, taskQueue: hostQueue, activities, ...variant.host }));
  const client = variant.nativeClient
    ? new Client({ connection, namespace: config.namespace, dataConverter })
    : variant.plain
      ? new Client({ connection: grpcConnection, namespace: config.namespace })
      : grpcClient;
  const prepared: Prepared = { variant, run: async () => {}, spaced: [], backToBack: [], eager: 0 };
  prepared.run = async () => {
    const handle = await client.workflow.start(pingWorkflow, {
      taskQueue: workflowQueue,
      workflowId: `bench-${randomUUID()}`,
      args: [{ queue: hostQueue }],
      ...(variant.eagerStart ? { requestEagerStart: true } : {}),
    });
    if (handle.eagerlyStarted) prepared.eager++;
    return handle.result();
  };
  return prepared;
}

const prepared: Prepared[] = [];
for (const v of variants) prepared.push(await prepare(v));
const running = workers.map((w) => w.run());

const direct = createRunner(logger);
const directTimes = { spaced: [] as number[], backToBack: [] as number[] };
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

// Warm up: every variant's first runs load its worker's caches and connections.
for (const p of prepared) for (let i = 0; i < 3; i++) await p.run();
for (const p of prepared) p.eager = 0;

/** One turn each for the direct command and every variant, starting at a different one each round. */
async function round(i: number, gapMs: number, into: 'spaced' | 'backToBack'): Promise<void> {
  const turns: (() => Promise<void>)[] = [
    async () => void directTimes[into].push(await timed(() => direct(['qemu-img', '--version']))),
    ...prepared.map((p) => async () => void p[into].push(await timed(p.run))),
  ];
  for (let k = 0; k < turns.length; k++) {
    if (gapMs) await sleep(gapMs);
    await turns[(i + k) % turns.length]!();
  }
}
for (let i = 0; i < n; i++) await round(i, GAP_MS, 'spaced');
for (let i = 0; i < n; i++) await round(i, 0, 'backToBack');

for (const w of workers) w.shutdown();
await Promise.allSettled(running);
await connection.close();
await grpcConnection.close();

const d = { spaced: median(directTimes.spaced), backToBack: median(directTimes.backToBack) };
const base = prepared[0]!;
const b = { spaced: median(base.spaced), backToBack: median(base.backToBack) };
console.log(`one-activity workflow under one SDK setting changed at a time, N=${n} each, server ${config.address}`);
console.log(
  `${'variant'.padEnd(42)} ${'spaced'.padStart(8)} ${'b2b'.padStart(8)}  overhead: spaced      b2b   vs defaults: spaced      b2b   (ms, medians)`,
);
console.log(`${'the command run directly'.padEnd(42)} ${ms(d.spaced)} ${ms(d.backToBack)}`);
for (const p of prepared) {
  const s = median(p.spaced);
  const bb = median(p.backToBack);
  console.log(
    `${p.variant.name.padEnd(42)} ${ms(s)} ${ms(bb)}  ${' '.repeat(9)}${ms(s - d.spaced)} ${ms(bb - d.backToBack)}  ${' '.repeat(12)}${ms(s - b.spaced)} ${ms(bb - b.backToBack)}${p.variant.eagerStart ? `   (started eagerly: ${p.eager} of ${2 * n})` : ''}`,
  );
}
process.exit(0);
