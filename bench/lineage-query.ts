/**
 * One lineage under load, on local orchestrator and control workers: VERSIONS registerVersion
 * updates, then tag and testResult updates until the lineage holds ENTRIES history entries
 * (sequential, then 8 at a time: the server allows 10 in-flight updates per workflow); then the
 * latency of each read a person makes over that state, p50/p95/p99 against the aim (p99 < 50 ms),
 * with the size of its answer: the queries as sent (describe, a page of versions, tags, history) and
 * the same reads through the CLI's client (one connection, as a command holds it; with its check
 * that an orchestrator polls); and the time to read the whole history (archived entries included).
 * Prints update throughput, the size of the run's history when it continued as new (events and
 * bytes), and the state each run handed to the next (bytes, of which history).
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
import { AesGcmCodec, imgflowDataConverter } from '../lib/codec.js';
import { openKeyring } from '../lib/keyring.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';
import {
  describeLineage,
  lineageHistory,
  lineageHistoryPage,
  lineageTags,
  lineageVersions,
} from '../starters/lineage-client.js';
import {
  describeQuery,
  gcUpdate,
  historyQuery,
  lineageWorkflowId,
  registerVersionUpdate,
  tagsQuery,
  tagUpdate,
  testResultUpdate,
  versionsQuery,
  type LineageInput,
} from '../workflows/lineage/messages.js';
import { lineageWorkflow } from '../workflows/lineage/workflow.js';
import type { NewVersion } from '../common/lineage.js';
import { ms, percentile } from './stats.js';

const versions = checkInt('VERSIONS', process.argv[2] ?? '1000', 1, 100_000);
const entries = checkInt('ENTRIES', process.argv[3] ?? '5000', versions * 2, 1_000_000);
/** Each read is timed this many times, the reads interleaved so that the machine's other work falls on all alike. */
const SAMPLES = 300;
const AIM_P99_MS = 50;

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
    // The lineage seals what it sends, as every imgflow worker does: this one opens it with the same keyring.
    dataConverter: imgflowDataConverter(config),
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

  // The reads a person makes, as queries and through the CLI's client; each answer's size once.
  const reads: [string, () => Promise<unknown>][] = [
    ['describe', () => h.query(describeQuery)],
    ['versions page 1', () => h.query(versionsQuery, {})],
    ['versions page 10', () => h.query(versionsQuery, { page: 10 })],
    ['tags page 1', () => h.query(tagsQuery, {})],
    ['history page 1', () => h.query(historyQuery, { page: 1 })],
    ['history last 50', () => h.query(historyQuery, { last: 50 })],
    ['client describe', () => describeLineage(client, image)],
    ['client versions', () => lineageVersions(client, image)],
    ['client tags', () => lineageTags(client, image)],
    ['client history', () => lineageHistoryPage(client, image)],
  ];
  const samples = reads.map(() => [] as number[]);
  const answerBytes: number[] = [];
  for (const [i, [, read]] of reads.entries()) answerBytes[i] = JSON.stringify(await read()).length;
  for (let n = 0; n < SAMPLES; n++)
    for (const [i, [, read]] of reads.entries()) {
      const t = performance.now();
      await read();
      samples[i]!.push(performance.now() - t);
    }
  const t = performance.now();
  const all = await lineageHistory(client, image);
  const readAllMs = performance.now() - t;
  const summary = await h.query(describeQuery);
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
  const worst = Math.max(...samples.map((xs) => percentile(xs, 0.99)));
  report = [
    `lineage ${image}: ${summary.counts.versions} versions, ${summary.counts.tags} tags, ${summary.historyEntries} history entries; server ${config.address}`,
    `updates/s   registerVersion (1 at a time) ${f(register)}   tag (8 at a time) ${f(tag)}   testResult (8 at a time) ${f(tests)}`,
    `read (ms, ${SAMPLES} each)         p50      p95      p99   answer    aim p99 < ${AIM_P99_MS} ms`,
    ...reads.map(
      ([name], i) =>
        `  ${name.padEnd(18)} ${ms(percentile(samples[i]!, 0.5))} ${ms(percentile(samples[i]!, 0.95))} ${ms(percentile(samples[i]!, 0.99))} ${`${(answerBytes[i]! / 1024).toFixed(1)} KiB`.padStart(10)}    ${percentile(samples[i]!, 0.99) < AIM_P99_MS ? 'met' : 'missed'}`,
    ),
    `  worst p99 ${worst.toFixed(1)} ms: aim ${worst < AIM_P99_MS ? 'met' : 'missed'}`,
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
