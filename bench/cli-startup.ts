/**
 * How fast the installed `imgflow` command answers, next to the Temporal CLI doing the same:
 * `imgflow --help` against `temporal --help`, and `imgflow maps --json` against
 * `temporal workflow list`, both against a headless dev server this bench starts on a free port
 * (an empty namespace: what is measured is start-up, connection and one listing). Each command
 * runs N times (default 15), the two alternating, after two warm-up runs each; prints the medians,
 * the minima and imgflow's ratio to the Temporal CLI, and Node's own start-up as the floor.
 *
 *   npm run bench -- bench/cli-startup.ts [N]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInt } from '../common/names.js';
import { freePorts } from '../starters/cluster/state.js';
import { findTemporalCli } from '../starters/temporal-cli.js';
import {
  connectWithin,
  ensureSearchAttributes,
  spawnDevServer,
  waitForNamespace,
} from '../starters/temporal-server.js';
import { median, ms } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '15', 3, 1000);
const IMGFLOW = fileURLToPath(new URL('../bin/imgflow.js', import.meta.url));
const temporal = findTemporalCli();
if (!temporal) throw new Error('no Temporal CLI: run scripts/setup.sh (or imgflow server install-cli) first');

// Neither command may pick up a server, namespace, token or home from this shell.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TEMPORAL_|IMGFLOW_)/.test(k)));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-cli-'));

/** Runs argv to completion and returns its wall time in ms; a failed run stops the bench. */
function wall(argv: string[]): number {
  const started = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const took = performance.now() - started;
  if (r.status !== 0)
    throw new Error(
      `${argv.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`,
    );
  return took;
}

interface Row {
  what: string;
  imgflow: string[];
  temporal: string[];
}

/** Both commands of a row, alternating, each first run twice unmeasured (disk cache, keyring). */
function measure(row: Row): { imgflow: number[]; temporal: number[] } {
  for (let i = 0; i < 2; i++) [row.imgflow, row.temporal].forEach(wall);
  const times = { imgflow: [] as number[], temporal: [] as number[] };
  for (let i = 0; i < n; i++) {
    const first = i % 2 === 0;
    if (first) times.imgflow.push(wall(row.imgflow));
    times.temporal.push(wall(row.temporal));
    if (!first) times.imgflow.push(wall(row.imgflow));
  }
  return times;
}

const [port] = await freePorts(1);
const namespace = 'imgflow-bench';
const address = `127.0.0.1:${port}`;
const server = spawnDevServer({
  cli: temporal,
  port: port!,
  dbFile: path.join(dir, 'server', 'dev.sqlite'),
  logFile: path.join(dir, 'server', 'server.log'),
  namespace,
});
try {
  const connection = await connectWithin(address, 60_000);
  if (!connection)
    throw new Error(`the dev server did not come up on ${address}; see ${path.join(dir, 'server', 'server.log')}`);
  await waitForNamespace(connection, namespace, 30_000);
  await ensureSearchAttributes(connection, namespace);
  await connection.close();

  const imgflow = (...args: string[]) => [process.execPath, IMGFLOW, ...args];
  const rows: Row[] = [
    { what: '--help', imgflow: imgflow('--help'), temporal: [temporal, '--help'] },
    {
      what: 'maps --json / workflow list',
      imgflow: imgflow(
        '--address',
        address,
        '--namespace',
        namespace,
        '--home',
        path.join(dir, 'home'),
        'maps',
        '--json',
      ),
      temporal: [temporal, 'workflow', 'list', '--address', address, '--namespace', namespace],
    },
  ];
  const floor = median(Array.from({ length: n }, () => wall([process.execPath, '-e', '0'])));

  console.log(
    `CLI start-up, wall ms, ${n} runs each (Node ${process.version}, ${temporal}, ${os.cpus().length} CPUs ${os.cpus()[0]?.model ?? '?'}, load average ${os.loadavg()[0]!.toFixed(1)} at the start)`,
  );
  console.log(
    `${'command'.padEnd(28)} ${'imgflow p50'.padStart(11)} ${'min'.padStart(8)} ${'temporal p50'.padStart(12)} ${'min'.padStart(8)} ${'ratio p50'.padStart(9)}`,
  );
  for (const row of rows) {
    const t = measure(row);
    const [a, b] = [median(t.imgflow), median(t.temporal)];
    console.log(
      `${row.what.padEnd(28)} ${ms(a, 11)} ${ms(Math.min(...t.imgflow))} ${ms(b, 12)} ${ms(Math.min(...t.temporal))} ${`${(a / b).toFixed(2)}x`.padStart(9)}`,
    );
  }
  console.log(`${'node -e 0 (the floor)'.padEnd(28)} ${ms(floor, 11)}`);
} finally {
  try {
    process.kill(-server.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
