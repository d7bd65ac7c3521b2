/**
 * The dev server against a production cluster, side by side in one run, on two operations: a
 * one-activity workflow (`pingWorkflow`, answered by the NAS worker) and a volume map (clone of a
 * 100 MiB qcow2 base, export none, local attach, through the volume workflow; the unmap and
 * delete after each are not timed). Rounds alternate, dev then cluster for each operation, so
 * load drift on the machine hits both alike; a first warm-up round is not counted.
 *
 * The dev server is the bench's own (a free port, its own SQLite file in a temp dir: the user's
 * is not touched). The cluster is made by `clusterUp` under its own name and state directory:
 * Temporal on PostgreSQL (postgres@127.0.0.1:5432 by default), one process per service, mutual
 * TLS and a token on every call; it is brought down with its databases dropped at the end, also
 * on failure. Each server has its own in-process workers (orchestrator, NAS, compute) and its
 * own home; the cluster's connect with a client certificate for this host and a worker token,
 * the client as the operator `clusterUp` made. Clients and workers of both servers use imgflow's
 * data converter on one keyring, so both pay the same payload codec and the ratio is the
 * server's.
 *
 * Prints p50/p95 per operation and server and the cluster/dev ratio of the medians, then the
 * idle memory (VmRSS) of each of the cluster's processes and their total, with the dev server's
 * for comparison.
 *
 *   npm run bench -- bench/cluster.ts [N]
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client, Connection } from '@temporalio/client';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { queues, WORKFLOW_QUEUE, type Role } from '../common/queues.js';
import { loadConfig, paths, shortHostName, type Config } from '../lib/config.js';
import { createKeyring } from '../lib/keyring.js';
import { createLogger } from '../lib/logger.js';
import { clientTls, clusterDown, clusterUp, frontendAddress, type UpResult } from '../starters/cluster/cluster.js';
import { issueClientCert } from '../starters/cluster/pki.js';
import { processStatuses } from '../starters/cluster/services.js';
import { stateFile } from '../starters/cluster/state.js';
import { mintToken } from '../starters/cluster/tokens.js';
import { connectClient } from '../starters/client.js';
import { say } from '../starters/context.js';
import { startLocalWorkers, type LocalWorkers } from '../starters/local-workers.js';
import {
  connectWithin,
  ensureSearchAttributes,
  ensureTemporalCli,
  spawnDevServer,
  waitForNamespace,
  type ServerProcess,
} from '../starters/temporal-server.js';
import { mapVolume, volumeHandle } from '../starters/volume-client.js';
import { freePort } from '../test/support/ports.js';
import { pingWorkflow } from '../workflows/ping.js';
import { deleteUpdate, unmapUpdate, type MapRequest } from '../workflows/volume/messages.js';
import { median, ms, percentile, timed } from './stats.js';

const n = checkInt('N', process.argv[2] ?? '20', 3, 1000);
const NAMESPACE = 'imgflow';
const ROLES: readonly Role[] = ['orchestrator', 'nas', 'compute'];
const IMAGE = 'bench-base';
const BASE_BYTES = 100 * 1024 * 1024;
/** Left for the servers to settle after the last run before their memory is read. */
const IDLE_SETTLE_MS = 5000;
const WORKER_TOKEN_TTL_SECONDS = 86_400;

// The drivers measured are the defaults (qcow2 store, no export), whatever this shell sets.
delete process.env.IMGFLOW_NAS_POOL;
delete process.env.IMGFLOW_NAS_EXPORT;

const logger = createLogger('bench', 'error');
const run = createRunner(logger);
const host = shortHostName();
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-cluster-'));
const codecKeys = path.join(root, 'keys', 'codec.json');
createKeyring(codecKeys);

type Access = Pick<Config, 'address' | 'tls' | 'apiKey' | 'apiKeyFile'>;
type Operation = (server: Server, round: string) => Promise<number>;

interface Server {
  label: 'dev' | 'cluster';
  client: Client;
  connection: Connection;
  workers: LocalWorkers;
  /** The qcow2 base in this server's NAS store. */
  base: string;
  times: Map<string, number[]>;
}

/** No environment: the shell's TEMPORAL_* and IMGFLOW_* settings must not send either side elsewhere. */
function configFor(home: string, access: Access): Config {
  return loadConfig({ ...access, home, host, namespace: NAMESPACE, codecKeys }, {});
}

/** A fully written qcow2 base in the NAS's store, as a build leaves it. */
async function makeBase(home: string): Promise<string> {
  const file = path.join(paths({ home }).nas(host), 'store', IMAGE, 'v1', `${IMAGE}-v1.qcow2`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(BASE_BYTES)]);
  await run(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a 0 ${BASE_BYTES}`, file]);
  return file;
}

async function openServer(label: Server['label'], access: { client: Access; worker: Access }): Promise<Server> {
  const home = path.join(root, label);
  const { client, connection } = await connectClient(configFor(home, access.client));
  const workers = await startLocalWorkers(configFor(home, access.worker), ROLES, logger);
  return { label, client, connection, workers, base: await makeBase(home), times: new Map() };
}

async function closeServer(server: Server): Promise<void> {
  await server.workers.stop();
  await server.connection.close();
}

/** Started detached so it boots while the cluster comes up; connected to later. */
async function spawnOwnDevServer(): Promise<ServerProcess> {
  const dir = path.join(root, 'dev-server');
  return spawnDevServer({
    cli: ensureTemporalCli(say),
    port: await freePort(),
    dbFile: path.join(dir, 'dev.sqlite'),
    logFile: path.join(dir, 'server.log'),
    namespace: NAMESPACE,
  });
}

async function prepareDevServer(server: ServerProcess): Promise<void> {
  const connection = await connectWithin(server.address, 60_000);
  if (!connection) throw new Error(`the bench's dev server did not come up on ${server.address}`);
  try {
    await waitForNamespace(connection, NAMESPACE, 30_000);
    await ensureSearchAttributes(connection, NAMESPACE);
  } finally {
    await connection.close();
  }
}

function stopDevServer(server: ServerProcess): void {
  try {
    // A throwaway server: nothing in it is worth a graceful stop.
    process.kill(-server.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

const devAccess = (server: ServerProcess): Access => ({ address: server.address, tls: { enabled: false } });

/** Workers connect as this host (its certificate) with a worker's token; the client as the operator `up` made. */
function clusterAccess(up: UpResult): { client: Access; worker: Access } {
  const { state, operator } = up;
  const apiKey = mintToken(state.signingKey, {
    role: 'worker',
    namespace: NAMESPACE,
    subject: `worker@${host}`,
    ttlSeconds: WORKER_TOKEN_TTL_SECONDS,
  });
  return {
    client: { address: operator.address, tls: operator.tls, apiKeyFile: operator.apiKeyFile },
    worker: { address: frontendAddress(state), tls: clientTls(state, issueClientCert(state.pki, host)), apiKey },
  };
}

const ping: Operation = (server) =>
  timed(() =>
    server.client.workflow.execute(pingWorkflow, {
      taskQueue: WORKFLOW_QUEUE,
      workflowId: `bench-ping-${randomUUID()}`,
      args: [{ queue: queues.nas(host) }],
    }),
  );

/** Times the map only; the unmap and delete after it leave the next round the same store. */
const map: Operation = async (server, round) => {
  const volume = `bench-${round}`;
  const request: MapRequest = {
    by: 'bench',
    base: { image: IMAGE, version: 'v1', artifact: { format: 'qcow2', host, path: server.base } },
    nas: host,
    computeHost: host,
  };
  const took = await timed(() => mapVolume(server.client, volume, request));
  const handle = volumeHandle(server.client, volume);
  await handle.executeUpdate(unmapUpdate, { args: [{ by: 'bench' }] });
  await handle.executeUpdate(deleteUpdate, { args: [{ by: 'bench' }] });
  return took;
};

const OPERATIONS: [string, Operation][] = [
  ['ping workflow', ping],
  ['volume map', map],
];

/** Each operation once on each server in turn; `record` false for the warm-up. */
async function runRound(servers: Server[], round: string, record: boolean): Promise<void> {
  for (const [name, operation] of OPERATIONS) {
    for (const server of servers) {
      const took = await operation(server, round);
      if (record) server.times.set(name, [...(server.times.get(name) ?? []), took]);
    }
  }
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function printLatencies(dev: Server, cluster: Server, clusterName: string): void {
  console.log(
    `dev server vs cluster ${clusterName} (PostgreSQL, a process per service, mutual TLS, tokens), N=${n} each, alternating, same payload codec`,
  );
  console.log(`operation         dev p50      p95  cluster p50      p95   cluster/dev p50   (ms)`);
  for (const [name] of OPERATIONS) {
    const [d, c] = [dev.times.get(name)!, cluster.times.get(name)!];
    const ratio = (median(c) / median(d)).toFixed(2);
    console.log(
      `${name.padEnd(15)} ${ms(median(d), 9)} ${ms(percentile(d, 0.95))} ${ms(median(c), 12)} ${ms(percentile(c, 0.95))}   ${ratio.padStart(15)}`,
    );
  }
}

async function printMemory(up: UpResult, devServer: ServerProcess): Promise<void> {
  console.log(`idle memory (VmRSS, ${IDLE_SETTLE_MS / 1000} s after the last run, workers still polling)`);
  let total = 0;
  for (const p of await processStatuses(up.state)) {
    if (p.pid === null) {
      console.log(`${p.name.padEnd(18)} down`);
      continue;
    }
    const rss = rssMiB(p.pid);
    total += rss;
    console.log(`${p.name.padEnd(18)} ${rss.toFixed(1).padStart(8)} MiB   pid ${p.pid}`);
  }
  console.log(`${'cluster total'.padEnd(18)} ${total.toFixed(1).padStart(8)} MiB`);
  console.log(
    `${'dev server'.padEnd(18)} ${rssMiB(devServer.pid).toFixed(1).padStart(8)} MiB   pid ${devServer.pid} (one process, for comparison)`,
  );
}

const clusterName = `bench-${randomBytes(4).toString('hex')}`;
const clusterDir = path.join(root, 'cluster');
let devServer: ServerProcess | undefined;
const servers: Server[] = [];
try {
  devServer = await spawnOwnDevServer();
  say(`cluster ${clusterName}: coming up`);
  const up = await clusterUp({ name: clusterName, dir: clusterDir, namespace: NAMESPACE, say });
  await prepareDevServer(devServer);
  servers.push(await openServer('dev', { client: devAccess(devServer), worker: devAccess(devServer) }));
  servers.push(await openServer('cluster', clusterAccess(up)));
  await runRound(servers, 'warm', false);
  for (let i = 0; i < n; i++) await runRound(servers, String(i), true);
  await sleep(IDLE_SETTLE_MS);
  printLatencies(servers[0]!, servers[1]!, clusterName);
  await printMemory(up, devServer);
} finally {
  for (const server of servers)
    await closeServer(server).catch((err: Error) => say(`closing the ${server.label} workers: ${err.message}`));
  if (devServer) stopDevServer(devServer);
  // A failed `down` leaves the temp dir, and the cluster's state in it, for a second try.
  if (fs.existsSync(stateFile(clusterDir))) await clusterDown(clusterDir, { dropDatabases: true });
  fs.rmSync(root, { recursive: true, force: true });
}
process.exit(0);
