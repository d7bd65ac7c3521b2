/**
 * What Temporal orchestration costs per activity: a one-activity workflow (`pingWorkflow`, whose
 * activity runs `qemu-img --version`) run N times, against the same command run directly N times.
 * Prints medians and the overhead per activity in milliseconds.
 *
 *   npm run bench -- bench/orchestration-overhead.ts [N]
 */
import { randomUUID } from 'node:crypto';
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
const p95 = (xs: number[]) => percentile(xs, 0.95);

/** Times each call; `gapMs` of idle time between calls (not timed) shows latency apart from load. */
async function timeEach(count: number, fn: () => Promise<unknown>, gapMs = 0): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
    times.push(await timed(fn));
  }
  return times;
}

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client, connection } = await ensureClient(config);
const local = await startLocalWorkers(config, ['orchestrator', 'nas'], logger);
const run = createRunner(logger);
const queue = queues.nas(config.host);
const workflow = () =>
  client.workflow.execute(pingWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `bench-${randomUUID()}`,
    args: [{ queue }],
  });

await timeEach(5, workflow); // warm up: workflow bundle, caches, connections
const direct = await timeEach(n, () => run(['qemu-img', '--version']));
const backToBack = await timeEach(n, workflow);
const spaced = await timeEach(n, workflow, 200);
await local.stop();
await connection.close();

console.log(`one-activity workflow vs the same command run directly, N=${n}, server ${config.address}`);
console.log(`                    median      p95   (ms)`);
console.log(`direct command    ${ms(median(direct))} ${ms(p95(direct))}`);
console.log(`workflow, spaced  ${ms(median(spaced))} ${ms(p95(spaced))}   (200 ms idle before each)`);
console.log(`workflow, b2b     ${ms(median(backToBack))} ${ms(p95(backToBack))}   (back to back)`);
console.log(
  `orchestration overhead per activity (median): ${(median(spaced) - median(direct)).toFixed(1)} ms spaced, ${(median(backToBack) - median(direct)).toFixed(1)} ms back to back`,
);
process.exit(0);
