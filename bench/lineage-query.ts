/**
 * One lineage under load, on a local orchestrator worker: VERSIONS registerVersion updates, then
 * tag and testResult updates until the lineage holds ENTRIES history entries (sequential, then 8
 * at a time: the server allows 10 in-flight updates per workflow); then query latency (describe,
 * and the last 50 history entries) over that state.
 * Prints update throughput, query p50/p99, and the size of the run's history when it continued
 * as new (events and bytes).
 *
 *   IMGFLOW_HOME=$(mktemp -d) npm run bench -- bench/lineage-query.ts [VERSIONS] [ENTRIES]
 */
import proto from '@temporalio/proto';
import { checkInt } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { ensureClient, startLocalWorkers } from '../starters/context.js';
import { describeQuery, historyQuery, lineageWorkflow, lineageWorkflowId, registerVersionUpdate, tagUpdate, testResultUpdate, type NewVersion } from '../workflows/lineage.js';

const versions = checkInt('VERSIONS', process.argv[2] ?? '1000', 1, 100_000);
const entries = checkInt('ENTRIES', process.argv[3] ?? '5000', versions * 2, 1_000_000);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client, connection } = await ensureClient(config);
const local = await startLocalWorkers(config, ['orchestrator'], logger);
const image = `bench-lineage-${Date.now().toString(36)}`;
const handle = await client.workflow.start(lineageWorkflow, { workflowId: lineageWorkflowId(image), taskQueue: WORKFLOW_QUEUE, args: [{ image }] });
const firstRun = handle.firstExecutionRunId;

/** A version as a small build records it. */
function version(n: number): NewVersion {
  return {
    createdAt: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString(),
    by: 'bench',
    message: `build ${n}`,
    arch: 'x86_64',
    os: 'debian-12',
    recipeDigest: 'r'.repeat(64),
    artifacts: [{ format: 'squashfs', host: 'nas1', path: `/nas/store/${image}/v${n}/${image}-v${n}.squashfs`, sha256: 'a'.repeat(64), bytes: 200_000_000 }],
    packages: 120,
    bytes: 400_000_000,
    manifests: { packages: { path: `/nas/store/${image}/v${n}/packages.json`, sha256: 'p'.repeat(64) }, files: { path: `/nas/store/${image}/v${n}/manifest.jsonl`, sha256: 'f'.repeat(64) } },
    private: [],
    shared: false,
    report: [{ phase: 'tarball', durationMs: 1000, packages: 120, bytes: 400_000_000 }],
    provenance: { builder: 'b1', source: 'tarball', tools: {}, workflowId: `build-${n}` },
  };
}

/** Runs `ops` one after another on `width` lanes; returns operations per second. */
async function timed(ops: (() => Promise<unknown>)[], width: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < ops.length) await ops[next++]!();
  }));
  return ops.length / ((performance.now() - started) / 1000);
}

const h = client.workflow.getHandle(handle.workflowId);
let report: string[] = [];
try {
  const register = await timed(Array.from({ length: versions }, (_, i) => () => h.executeUpdate(registerVersionUpdate, { args: [version(i + 1)] })), 1);
  const tag = await timed(Array.from({ length: versions }, (_, i) => () => h.executeUpdate(tagUpdate, { args: [{ by: 'bench', version: `v${i + 1}`, name: `t${i + 1}` }] })), 8);
  const rest = entries - 2 * versions;
  const tests = await timed(Array.from({ length: rest }, (_, i) => () => h.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: `t${(i % versions) + 1}`, passed: i % 3 !== 0 }] })), 8);

  const describeMs: number[] = [];
  const historyMs: number[] = [];
  for (let i = 0; i < 300; i++) {
    let t = performance.now();
    await h.query(describeQuery);
    describeMs.push(performance.now() - t);
    t = performance.now();
    await h.query(historyQuery, { last: 50 });
    historyMs.push(performance.now() - t);
  }
  const view = await h.query(describeQuery);
  const first = await client.workflow.getHandle(handle.workflowId, firstRun).fetchHistory();
  const firstBytes = proto.temporal.api.history.v1.History.encode(first).finish().length;
  const continued = first.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes ? 'continued as new' : 'still running (no continue-as-new yet)';
  const current = await h.describe();
  const f = (x: number) => x.toFixed(1).padStart(8);
  report = [
    `lineage ${image}: ${view.versions.length} versions, ${Object.keys(view.tags).length} tags, ${view.historyEntries} history entries; server ${config.address}`,
    `updates/s   registerVersion (1 at a time) ${f(register)}   tag (8 at a time) ${f(tag)}   testResult (8 at a time) ${f(tests)}`,
    `query ms    describe p50 ${f(pct(describeMs, 0.5))} p99 ${f(pct(describeMs, 0.99))}   history(last 50) p50 ${f(pct(historyMs, 0.5))} p99 ${f(pct(historyMs, 0.99))}`,
    `first run:  ${first.events?.length ?? 0} events, ${(firstBytes / 1024).toFixed(0)} KiB of history, ${continued}; now run ${current.runId.slice(0, 8)} with ${current.historyLength} events`,
  ];
} finally {
  // Nothing of the bench stays running on the server, whatever happened.
  await h.terminate('bench done').catch(() => undefined);
  await local.stop();
  await connection.close();
}
console.log(report.join('\n'));
process.exit(0);
