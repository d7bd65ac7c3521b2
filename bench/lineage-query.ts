/**
 * One lineage under load, on local orchestrator and control workers: VERSIONS registerVersion
 * updates, then tag and testResult updates until the lineage holds ENTRIES history entries
 * (sequential, then 8 at a time: the server allows 10 in-flight updates per workflow); then query
 * latency (describe, and the last 50 history entries) over that state, and the time to read the
 * whole history as `imgflow history` does (archived entries included).
 * Prints update throughput, query p50/p99, the size of the run's history when it continued as new
 * (events and bytes), and the state each run handed to the next (bytes, of which history).
 * Then a second lineage of VERSIONS versions, all but the newest 5 removed by gc (their store a NAS
 * worker of its own in this process): the state it hands on once their records are archived, beside
 * what the same versions in full would weigh.
 *
 *   IMGFLOW_HOME=$(mktemp -d) npm run bench -- bench/lineage-query.ts [VERSIONS] [ENTRIES]
 */
import proto from '@temporalio/proto';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createNasRetentionActivities } from '../activities/nas/retention.js';
import { isStub, type VersionRecord } from '../common/lineage.js';
import { checkInt } from '../common/names.js';
import { mapLimited } from '../lib/concurrency.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { loadConfig } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { createLogger } from '../lib/logger.js';
import { AesGcmCodec } from '../lib/codec.js';
import { openKeyring } from '../lib/keyring.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';
import { lineageHistory } from '../starters/lineage-client.js';
import {
  describeQuery,
  gcUpdate,
  historyQuery,
  lineageWorkflowId,
  registerVersionUpdate,
  tagUpdate,
  testResultUpdate,
  type LineageInput,
} from '../workflows/lineage/messages.js';
import { lineageWorkflow } from '../workflows/lineage/workflow.js';
import type { NewVersion } from '../common/lineage.js';

const versions = checkInt('VERSIONS', process.argv[2] ?? '1000', 1, 100_000);
const entries = checkInt('ENTRIES', process.argv[3] ?? '5000', versions * 2, 1_000_000);
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

const config = loadConfig();
const logger = createLogger('bench', 'error');
const { client, connection } = await ensureClient(config);
/** Continue-as-new inputs are stored sealed: opened here to measure what the state weighs. */
const codec = new AesGcmCodec(openKeyring(config.codecKeys).keyring);
const local = await startLocalWorkers(config, ['orchestrator', 'control'], logger);
const image = `bench-lineage-${Date.now().toString(36)}`;
const handle = await client.workflow.start(lineageWorkflow, {
  workflowId: lineageWorkflowId(image),
  taskQueue: WORKFLOW_QUEUE,
  args: [{ image }],
});
const firstRun = handle.firstExecutionRunId;

/** A version as a small build records it. */
function version(n: number, image: string, nas = 'nas1'): NewVersion {
  return {
    createdAt: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString(),
    by: 'bench',
    message: `build ${n}`,
    arch: 'x86_64',
    os: 'debian-12',
    recipeDigest: 'r'.repeat(64),
    artifacts: [
      {
        format: 'squashfs',
        host: nas,
        path: `/nas/store/${image}/v${n}/${image}-v${n}.squashfs`,
        sha256: 'a'.repeat(64),
        bytes: 200_000_000,
      },
    ],
    packages: 120,
    bytes: 400_000_000,
    manifests: {
      packages: { path: `/nas/store/${image}/v${n}/packages.json`, sha256: 'p'.repeat(64) },
      files: { path: `/nas/store/${image}/v${n}/manifest.jsonl`, sha256: 'f'.repeat(64) },
    },
    private: [],
    shared: false,
    report: [{ phase: 'tarball', durationMs: 1000, packages: 120, bytes: 400_000_000 }],
    provenance: { builder: 'b1', source: 'tarball', tools: {}, workflowId: `build-${n}` },
  };
}

/** The continue-as-new inputs of every run so far: bytes, bytes and entries of history carried, and the state. */
async function carried(
  workflowId: string,
  firstRunId: string,
): Promise<{ bytes: number; historyBytes: number; history: number; state: LineageInput['state'] }[]> {
  const found = [];
  for (let run: string | undefined = firstRunId; run;) {
    const attrs: proto.temporal.api.history.v1.IWorkflowExecutionContinuedAsNewEventAttributes | null | undefined = (
      await client.workflow.getHandle(workflowId, run).fetchHistory()
    ).events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes;
    const [payload] = await codec.decode(attrs?.input?.payloads?.slice(0, 1) ?? []);
    const data = payload?.data;
    if (data) {
      const { state } = JSON.parse(Buffer.from(data).toString('utf8')) as LineageInput;
      found.push({
        bytes: data.length,
        historyBytes: JSON.stringify(state!.history).length,
        history: state!.history.length,
        state,
      });
    }
    run = attrs?.newExecutionRunId ?? undefined;
  }
  return found;
}

/** Runs `ops` on `width` lanes; returns operations per second. */
async function timed(ops: (() => Promise<unknown>)[], width: number): Promise<number> {
  const started = performance.now();
  await mapLimited(ops, width, (op) => op());
  return ops.length / ((performance.now() - started) / 1000);
}

/**
 * A lineage of `versions` versions of which gc removes all but 5, each on a NAS served by a worker of
 * this process; once the lineage continued as new (gc's deletions fill its history), what it handed on.
 */
async function removal(): Promise<string> {
  const removedImage = `${image}-gc`;
  const nas = `bench-nas-${Date.now().toString(36)}`;
  const nasConnection = await NativeConnection.connect(connectionSettings(config));
  const nasWorker = await Worker.create({
    connection: nasConnection,
    namespace: config.namespace,
    taskQueue: `nas.${nas}`,
    activities: createNasRetentionActivities({ config: { ...config, host: nas } }),
  });
  const running = nasWorker.run();
  const r = await client.workflow.start(lineageWorkflow, {
    workflowId: lineageWorkflowId(removedImage),
    taskQueue: WORKFLOW_QUEUE,
    args: [{ image: removedImage, maxHistoryEvents: versions * 5 }],
  });
  const latest = client.workflow.getHandle(r.workflowId);
  try {
    for (let i = 1; i <= versions; i++)
      await latest.executeUpdate(registerVersionUpdate, { args: [version(i, removedImage, nas)] });
    const t = performance.now();
    const gc = await latest.executeUpdate(gcUpdate, { args: [{ by: 'bench', keep: 5 }] });
    const gcMs = performance.now() - t;
    let last;
    // The continue-as-new that follows the gc archives the removed versions' records.
    for (;;) {
      last = (await carried(r.workflowId, r.firstExecutionRunId)).at(-1);
      if (last?.state?.versions.some((v) => v.removed)) break;
      await new Promise((done) => setTimeout(done, 500));
    }
    const stubs = last.state.versions.filter(isStub);
    const full = stubs.map(
      (s) =>
        ({
          ...version(Number(s.id.slice(1)), removedImage, nas),
          id: s.id,
          removed: s.removed,
        }) satisfies VersionRecord,
    );
    const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
    const fullBytes = JSON.stringify(full).length;
    const stubBytes = JSON.stringify(stubs).length;
    return `removed:    ${versions} versions, ${gc.removed.length} removed by gc in ${(gcMs / 1000).toFixed(1)} s; carried input ${kib(last.bytes)} with ${stubs.length} stubs (${kib(stubBytes)}, ${(stubBytes / Math.max(1, stubs.length)).toFixed(0)} B each; the records in full would be ${kib(fullBytes)}, ${(fullBytes / Math.max(1, full.length)).toFixed(0)} B each), ${last.state.versionArchive?.count ?? 0} records archived`;
  } finally {
    await latest.terminate('bench done').catch(() => undefined);
    nasWorker.shutdown();
    await running;
    await nasConnection.close();
  }
}

const h = client.workflow.getHandle(handle.workflowId);
let report: string[] = [];
try {
  const register = await timed(
    Array.from(
      { length: versions },
      (_, i) => () => h.executeUpdate(registerVersionUpdate, { args: [version(i + 1, image)] }),
    ),
    1,
  );
  const tag = await timed(
    Array.from(
      { length: versions },
      (_, i) => () => h.executeUpdate(tagUpdate, { args: [{ by: 'bench', version: `v${i + 1}`, name: `t${i + 1}` }] }),
    ),
    8,
  );
  const rest = entries - 2 * versions;
  const tests = await timed(
    Array.from(
      { length: rest },
      (_, i) => () =>
        h.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: `t${(i % versions) + 1}`, passed: i % 3 !== 0 }] }),
    ),
    8,
  );

  let t = 0;
  const describeMs: number[] = [];
  const historyMs: number[] = [];
  for (let i = 0; i < 300; i++) {
    t = performance.now();
    await h.query(describeQuery);
    describeMs.push(performance.now() - t);
    t = performance.now();
    await h.query(historyQuery, { last: 50 });
    historyMs.push(performance.now() - t);
  }
  t = performance.now();
  const all = await lineageHistory(client, image);
  const readAllMs = performance.now() - t;
  const view = await h.query(describeQuery);
  const { archive } = await h.query(historyQuery, { last: 0 });
  const inputs = await carried(handle.workflowId, firstRun);
  const largest = inputs.reduce((a, b) => (b.bytes > a.bytes ? b : a), { bytes: 0, historyBytes: 0, history: 0 });
  const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
  const first = await client.workflow.getHandle(handle.workflowId, firstRun).fetchHistory();
  const firstBytes = proto.temporal.api.history.v1.History.encode(first).finish().length;
  const continued = first.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes
    ? 'continued as new'
    : 'still running (no continue-as-new yet)';
  const current = await h.describe();
  const f = (x: number) => x.toFixed(1).padStart(8);
  report = [
    `lineage ${image}: ${view.versions.length} versions, ${Object.keys(view.tags).length} tags, ${view.historyEntries} history entries; server ${config.address}`,
    `updates/s   registerVersion (1 at a time) ${f(register)}   tag (8 at a time) ${f(tag)}   testResult (8 at a time) ${f(tests)}`,
    `query ms    describe p50 ${f(pct(describeMs, 0.5))} p99 ${f(pct(describeMs, 0.99))}   history(last 50) p50 ${f(pct(historyMs, 0.5))} p99 ${f(pct(historyMs, 0.99))}`,
    `first run:  ${first.events?.length ?? 0} events, ${(firstBytes / 1024).toFixed(0)} KiB of history, ${continued}; now run ${current.runId.slice(0, 8)} with ${current.historyLength} events`,
    `carried:    ${inputs.length} continues-as-new; largest input ${kib(largest.bytes)} (history ${largest.history} entries, ${kib(largest.historyBytes)}); last ${kib(inputs.at(-1)?.bytes ?? 0)}; ${archive?.count ?? 0} entries archived`,
    `history:    all ${all.length} entries read in ${readAllMs.toFixed(0)} ms`,
    await removal(),
  ];
} finally {
  // Nothing of the bench stays running on the server, whatever happened.
  await h.terminate('bench done').catch(() => undefined);
  await local.stop();
  await connection.close();
}
console.log(report.join('\n'));
process.exit(0);
