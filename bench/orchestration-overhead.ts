/**
 * What Temporal orchestration costs per activity: a one-activity workflow (`pingWorkflow`, whose
 * activity runs `qemu-img --version`) against the same command run directly, N times each, the
 * two alternating so that drift in the machine's load falls on both. Two modes: spaced (200 ms
 * idle before each run: latency apart from load) and back to back. Prints the medians and p95s
 * side by side with the direct command and the overhead per activity against the aim (< 25 ms),
 * then where a workflow's time goes, leg by leg, from the server's own event times in each run's
 * history (medians): the start call and the first workflow task's dispatch, the workflow tasks'
 * round trips through the worker, the activity task's dispatch, the activity itself (the command
 * and its heartbeat and completion), and the result reaching the client.
 *
 *   npm run bench -- bench/orchestration-overhead.ts [N]
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { WorkflowHandle } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { queues, WORKFLOW_QUEUE } from '../common/queues.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';
import { pingWorkflow } from '../workflows/ping.js';
import { median, ms, percentile, timed } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '50', 5, 10_000);
const GAP_MS = 200;
const AIM_MS = 25;
const p95 = (xs: number[]) => percentile(xs, 0.95);

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client, connection } = await ensureClient(config);
const local = await startLocalWorkers(config, ['orchestrator', 'nas'], logger);
const run = createRunner(logger);
const queue = queues.nas(config.host);

interface WorkflowRun {
  ms: number;
  handle: WorkflowHandle;
  /** When the client sent the start and had the result, on this machine's clock. */
  sentAt: number;
  doneAt: number;
}

async function workflow(): Promise<WorkflowRun> {
  const sentAt = Date.now();
  const started = performance.now();
  const handle = await client.workflow.start(pingWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `bench-${randomUUID()}`,
    args: [{ queue }],
  });
  await handle.result();
  return { ms: performance.now() - started, handle, sentAt, doneAt: Date.now() };
}
const direct = () => timed(() => run(['qemu-img', '--version']));
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

/** N runs of each, alternating which goes first; `gapMs` of idle time (not timed) before each. */
async function measure(gapMs: number) {
  const times = { direct: [] as number[], workflow: [] as WorkflowRun[] };
  for (let i = 0; i < n; i++) {
    const order = i % 2 === 0 ? ['direct', 'workflow'] : ['workflow', 'direct'];
    for (const which of order) {
      if (gapMs) await sleep(gapMs);
      if (which === 'direct') times.direct.push(await direct());
      else times.workflow.push(await workflow());
    }
  }
  return times;
}

for (let i = 0; i < 5; i++) await workflow(); // warm up: workflow bundle, caches, connections
const spaced = await measure(GAP_MS);
const backToBack = await measure(0);

type Event = temporal.api.history.v1.IHistoryEvent;
const at = (e: Event | undefined) =>
  e?.eventTime ? Number(e.eventTime.seconds) * 1000 + Math.round((e.eventTime.nanos ?? 0) / 1e6) : NaN;

/** A run's legs in ms, from its history's event times (the server's clock) and the client's. */
async function legs(r: WorkflowRun): Promise<Record<string, number>> {
  const events = (await r.handle.fetchHistory()).events ?? [];
  const first = (type: number, from = 0) => events.slice(from).find((e) => Number(e.eventType) === type);
  const idx = (e: Event | undefined) => (e ? events.indexOf(e) : -1);
  // temporal.api.enums.v1.EventType
  const [STARTED, WFT_STARTED, WFT_COMPLETED, ACT_SCHEDULED, ACT_STARTED, ACT_COMPLETED, WF_COMPLETED] = [
    1, 6, 7, 10, 11, 12, 2,
  ];
  const wfStarted = first(STARTED);
  const wft1Started = first(WFT_STARTED);
  const wft1Completed = first(WFT_COMPLETED);
  const actScheduled = first(ACT_SCHEDULED);
  const actStarted = first(ACT_STARTED);
  const actCompleted = first(ACT_COMPLETED);
  const wft2Started = first(WFT_STARTED, idx(actCompleted));
  const wft2Completed = first(WFT_COMPLETED, idx(actCompleted));
  const wfCompleted = first(WF_COMPLETED);
  return {
    'start call to first workflow task': at(wft1Started) - r.sentAt,
    '  of which: first task dispatch': at(wft1Started) - at(wfStarted),
    'first workflow task in the worker': at(wft1Completed) - at(wft1Started),
    'activity task dispatch': at(actStarted) - at(actScheduled),
    'activity (command, heartbeat, completion)': at(actCompleted) - at(actStarted),
    'second workflow task: dispatch': at(wft2Started) - at(actCompleted),
    'second workflow task in the worker': at(wft2Completed) - at(wft2Started),
    'workflow completed to result in the client': r.doneAt - at(wfCompleted),
  };
}

async function legMedians(runs: WorkflowRun[]): Promise<Record<string, number>> {
  const all = await Promise.all(runs.map(legs));
  return Object.fromEntries(Object.keys(all[0]!).map((k) => [k, median(all.map((l) => l[k]!))]));
}
const spacedLegs = await legMedians(spaced.workflow);
const backToBackLegs = await legMedians(backToBack.workflow);
await local.stop();
await connection.close();

const row = (what: string, xs: number[], note = '') =>
  console.log(`${what.padEnd(22)} ${ms(median(xs))} ${ms(p95(xs))}${note}`);
const overhead = (t: { direct: number[]; workflow: WorkflowRun[] }) =>
  median(t.workflow.map((r) => r.ms)) - median(t.direct);
const verdict = (x: number) => `${x.toFixed(1)} ms ${x < AIM_MS ? `(< ${AIM_MS}: met)` : `(aim < ${AIM_MS}: missed)`}`;

console.log(
  `one-activity workflow vs the same command run directly, N=${n} each, alternating, server ${config.address}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0]!.toFixed(1)}`,
);
console.log(`${''.padEnd(22)}   median      p95   (ms)`);
row('direct, spaced', spaced.direct, `   (${GAP_MS} ms idle before each)`);
row(
  'workflow, spaced',
  spaced.workflow.map((r) => r.ms),
);
row('direct, b2b', backToBack.direct, '   (back to back)');
row(
  'workflow, b2b',
  backToBack.workflow.map((r) => r.ms),
);
console.log(
  `orchestration overhead per activity (median): ${verdict(overhead(spaced))} spaced, ${verdict(overhead(backToBack))} back to back`,
);
console.log(`where a workflow's time goes (medians, ms; server event times, client clock for the ends):`);
console.log(`${''.padEnd(44)} ${'spaced'.padStart(8)} ${'b2b'.padStart(8)}`);
for (const k of Object.keys(spacedLegs)) console.log(`${k.padEnd(44)} ${ms(spacedLegs[k]!)} ${ms(backToBackLegs[k]!)}`);
process.exit(0);
