/**
 * How long the installed `imgflow` takes to say that nobody serves the workflow queue: a query
 * (`imgflow tags`), an update (`imgflow tag`) and a map (`imgflow map`, which reads the image's
 * lineage first) to an image whose lineage exists while no orchestrator runs. Two cases, on a
 * headless dev server this bench starts on a free port: no worker has ever polled the queue, and
 * the orchestrator stopped (drained) a moment before. Each command runs N times (default 3);
 * prints per command and case the median wall time against the aim (3 s), whether the error was
 * one line, and whether it named the queue. A command is cut off after 60 s.
 *
 *   npm run bench -- bench/no-worker.ts [N]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInt } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { freePorts } from '../starters/cluster/state.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';
import { findTemporalCli } from '../starters/temporal-cli.js';
import { lineageWorkflowId, describeQuery } from '../workflows/lineage/messages.js';
import { lineageWorkflow } from '../workflows/lineage/workflow.js';
import { median } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '3', 1, 100);
const AIM_S = 3;
const CUT_OFF_MS = 60_000;
const IMGFLOW = fileURLToPath(new URL('../bin/imgflow.js', import.meta.url));
if (!findTemporalCli()) throw new Error('no Temporal CLI: run scripts/setup.sh (or imgflow server install-cli) first');

// The commands may pick up no server, namespace, token or home from this shell.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TEMPORAL_|IMGFLOW_)/.test(k)));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-noworker-'));
const [port] = await freePorts(1);
const config = loadConfig(
  { address: `127.0.0.1:${port}`, home: path.join(dir, 'home'), metricsAddress: '' },
  { ...env, IMGFLOW_HOST: 'bench-host' },
);
const image = 'noworker-img';
const logger = createLogger('bench', 'error');

interface Outcome {
  ms: number;
  status: number | null;
  lines: string[];
}

function cli(args: string[]): Outcome {
  const started = performance.now();
  const r = spawnSync(
    process.execPath,
    [IMGFLOW, '--address', config.address, '--namespace', config.namespace, '--home', config.home, ...args],
    { env, encoding: 'utf8', timeout: CUT_OFF_MS },
  );
  const ms = performance.now() - started;
  return { ms, status: r.status, lines: r.stderr.trim().split('\n').filter(Boolean) };
}

const commands: { what: string; args: (i: number) => string[] }[] = [
  { what: `query: imgflow tags ${image}`, args: () => ['tags', image] },
  { what: `update: imgflow tag ${image} --name t<i>`, args: (i) => ['tag', image, '--name', `t${i}`] },
  {
    what: `map: imgflow map vol --image ${image} ...`,
    args: (i) => ['map', `vol${i}`, '--image', image, '--nas', 'bench-host', '--compute', 'bench-host'],
  },
];

const rows: string[] = [];
function measure(when: string, before: () => Promise<void> = async () => {}) {
  return async () => {
    for (const c of commands) {
      const outcomes: Outcome[] = [];
      for (let i = 0; i < n; i++) {
        await before();
        outcomes.push(cli(c.args(outcomes.length + (when.startsWith('stopped') ? 100 : 0))));
      }
      const s = median(outcomes.map((o) => o.ms)) / 1000;
      const last = outcomes.at(-1)!;
      const oneLine = outcomes.every((o) => o.lines.length === 1 && o.status !== 0);
      const named = outcomes.every((o) => o.lines.join(' ').includes(`${WORKFLOW_QUEUE} queue`));
      rows.push(
        `${c.what.padEnd(44)} ${when.padEnd(24)} ${`${s.toFixed(2)} s`.padStart(9)} ${(s < AIM_S ? `< ${AIM_S} s` : `MISSED ${AIM_S} s`).padEnd(10)} ${(oneLine ? 'yes' : 'no').padEnd(9)} ${(named ? 'yes' : 'no').padEnd(6)} ${last.status === null ? `cut off at ${CUT_OFF_MS / 1000} s` : (last.lines.at(-1) ?? '').slice(0, 150)}`,
      );
    }
  };
}

const { client, connection } = await ensureClient(config);
try {
  // The image's lineage, started with nobody to run it: its first workflow task waits.
  await client.workflow.start(lineageWorkflow, {
    workflowId: lineageWorkflowId(image),
    taskQueue: WORKFLOW_QUEUE,
    args: [{ image }],
  });
  await measure('never polled')();

  // An orchestrator runs the lineage, answers once, and is stopped (drained) before each command.
  await measure('stopped a moment before', async () => {
    const local = await startLocalWorkers(config, ['orchestrator'], logger);
    await client.workflow.getHandle(lineageWorkflowId(image)).query(describeQuery);
    await local.stop();
  })();

  console.log(
    `no orchestrator on the ${WORKFLOW_QUEUE} queue: wall time of the installed imgflow until its error, median of ${n}, Node ${process.version}, load average ${os.loadavg()[0]!.toFixed(1)}`,
  );
  console.log(
    `${'command'.padEnd(44)} ${'case'.padEnd(24)} ${'median'.padStart(9)} ${'aim'.padEnd(10)} ${'one line'.padEnd(9)} ${'queue'.padEnd(6)} the error`,
  );
  for (const row of rows) console.log(row);
} finally {
  await connection.close();
  const pidFile = path.join(config.home, 'temporal', 'server.pid');
  if (fs.existsSync(pidFile)) {
    try {
      process.kill(-Number(fs.readFileSync(pidFile, 'utf8')), 'SIGTERM');
    } catch {
      /* already gone */
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
