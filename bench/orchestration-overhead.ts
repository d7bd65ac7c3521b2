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
import { ensureClient, startLocalWorkers } from '../starters/context.js';
import { pingWorkflow } from '../workflows/ping.js';

const n = checkInt('N', process.argv[2] ?? '50', 5, 10_000);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)]!;

async function timeEach(count: number, fn: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return times;
}

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client, connection } = await ensureClient(config);
const local = await startLocalWorkers(config, ['orchestrator', 'nas'], logger);
const run = createRunner(logger);
const queue = queues.nas(config.host);
const workflow = () => client.workflow.execute(pingWorkflow, { taskQueue: WORKFLOW_QUEUE, workflowId: `bench-${randomUUID()}`, args: [{ queue }] });

await timeEach(5, workflow); // warm up: workflow bundle, caches, connections
const direct = await timeEach(n, () => run(['qemu-img', '--version']));
const orchestrated = await timeEach(n, workflow);
await local.stop();
await connection.close();

const fmt = (x: number) => x.toFixed(1).padStart(8);
console.log(`one-activity workflow vs the same command run directly, N=${n}, server ${config.address}`);
console.log(`                    median      p95   (ms)`);
console.log(`direct command    ${fmt(median(direct))} ${fmt(p95(direct))}`);
console.log(`workflow          ${fmt(median(orchestrated))} ${fmt(p95(orchestrated))}`);
console.log(`orchestration overhead per activity (median): ${(median(orchestrated) - median(direct)).toFixed(1)} ms`);
process.exit(0);
