/**
 * A whole site on this one machine: the Temporal cluster (cluster.ts) with its frontend on the
 * hosts' bridge, and the hosts (hosts.ts), each worker in its own namespace holding a certificate
 * that names its host, a worker token and the site's payload keyring. The NAS stores on ZFS (a
 * pool the site names, or a file-backed one made here and destroyed by `siteDown`), so that its
 * tgtd serves raw volumes. `siteUp` again finishes what is missing; `siteDown` removes it all.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Connection } from '@temporalio/client';
import { createRunner, type Run } from '../../activities/runner.js';
import { checkDataset } from '../../activities/drivers/storage/zfs.js';
import { CONTROL_QUEUE, queues, WORKFLOW_QUEUE, type Role } from '../../common/queues.js';
import { CONNECTION_ENV } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import {
  clientTls,
  clusterConnection,
  clusterDown,
  clusterUp,
  tokenFor,
  type UpOptions,
  type UpResult,
} from './cluster.js';
import { downHosts, hostPlan, hostStatus, readHostsState, upHosts, type HostsState } from './hosts.js';
import { issueClientCert } from './pki.js';
import type { ClusterState } from './state.js';

const POOL_FILE = 'nas-0.pool';
const POOL_BYTES = 4 * 1024 ** 3;
const POOL_BUSY_MS = 30_000;
const WORKER_TOKEN_SECONDS = 365 * 86_400;

export interface SiteOptions extends Omit<UpOptions, 'listen'> {
  compute: number;
  /** The payload keyring every worker and this machine's operator share. */
  codecKeys: string;
  /** The NAS's ZFS dataset; a file-backed pool is made when absent. */
  nasPool?: string;
  /** More environment for a host's workers (tests: shims, compute pools). */
  hostEnv?: Record<string, Record<string, string>>;
  /** Hosts whose workers run; all when absent. */
  workers?: string[];
}

export interface SiteUp {
  cluster: UpResult;
  hosts: HostsState;
  pool: string;
}

const e = CONNECTION_ENV;
/** The settings every worker of a cluster gets (docker-compose.yml and the systemd unit give the same). */
export const WORKER_SETTINGS = [
  e.certPath,
  e.keyPath,
  e.caPath,
  e.serverName,
  e.apiKeyFile,
  'IMGFLOW_CODEC_KEYS',
] as const;

/** What a host's worker needs to reach the cluster: the Temporal CLI's TLS names and imgflow's. */
export function workerEnv(
  state: ClusterState,
  host: string,
  codecKeys: string,
): Record<(typeof WORKER_SETTINGS)[number], string> {
  const tls = clientTls(state, issueClientCert(state.pki, host));
  return {
    [e.certPath]: tls.certPath!,
    [e.keyPath]: tls.keyPath!,
    [e.caPath]: tls.caPath!,
    [e.serverName]: tls.serverName!,
    [e.apiKeyFile]: tokenFor(state, 'worker', `${host}@${state.name}`, WORKER_TOKEN_SECONDS, `worker-${host}`),
    IMGFLOW_CODEC_KEYS: codecKeys,
  };
}

export async function siteUp(o: SiteOptions): Promise<SiteUp> {
  const say = o.say ?? (() => {});
  const run = createRunner(createLogger('imgflow-site', process.env.IMGFLOW_LOG_LEVEL ?? 'warn'));
  const pool = o.nasPool === undefined ? await ensurePool(run, o.dir, say) : checkDataset('--nas-pool', o.nasPool);
  // The network first: the frontend listens on its gateway, and the workers dial it there.
  const network = await upHosts({ dir: o.dir, compute: o.compute, workers: [] }, say);
  const cluster = await clusterUp({ ...o, listen: network.gateway });
  const env = Object.fromEntries(
    hostPlan(o.compute).map(({ name }) => [
      name,
      {
        ...workerEnv(cluster.state, name, o.codecKeys),
        ...(name === 'nas-0' ? { IMGFLOW_NAS_POOL: pool } : {}),
        ...o.hostEnv?.[name],
      },
    ]),
  );
  const hosts = await upHosts(
    {
      dir: o.dir,
      compute: o.compute,
      frontendPort: cluster.state.ports.frontend.grpc,
      env,
      ...(o.workers ? { workers: o.workers } : {}),
    },
    say,
  );
  return { cluster, hosts, pool };
}

/** Stops the hosts, destroys the pool made for the NAS, and stops the cluster (dropping its databases if asked). */
export async function siteDown(
  dir: string,
  o: { dropDatabases?: boolean; say?: (line: string) => void } = {},
): Promise<string[]> {
  const say = o.say ?? (() => {});
  const run = createRunner(createLogger('imgflow-site', process.env.IMGFLOW_LOG_LEVEL ?? 'warn'));
  const hosts = readHostsState(dir);
  if (hosts) await downHosts(hosts, say, run);
  await destroyPool(run, dir, say);
  return clusterDown(dir, o.dropDatabases === undefined ? {} : { dropDatabases: o.dropDatabases });
}

// ---------------------------------------------------------------------------------------------
// nas-0's disk: a file-backed zfs-fuse pool, named after the cluster's directory

/**
 * The pool made for nas-0 of the cluster in `dir`. Pool names are one namespace per machine: the
 * name is a digest of the whole path, since the path's last bytes alone (as it once was) name two
 * sites the same when their directories end alike (`.../a/cluster` and `.../b/cluster`, or one
 * cluster name under two homes), and the second site then took, and its `down` destroyed, the
 * first one's pool.
 */
export const sitePoolName = (dir: string) =>
  `imgflow-${createHash('sha256').update(path.resolve(dir)).digest('hex').slice(0, 12)}`;

const poolMountpoint = (dir: string) => path.join(path.resolve(dir), 'nas-0.zfs');

async function zfsFuseRunning(run: Run): Promise<boolean> {
  return (await run(['zpool', 'list', '-H', '-o', 'name'], { okExitCodes: [1] })).exitCode === 0;
}

/** zfs-fuse is one per machine: started when absent, and never stopped here (others may use it). */
async function ensureZfsFuse(run: Run): Promise<void> {
  if (await zfsFuseRunning(run)) return;
  await run(['zfs-fuse']);
  const deadline = Date.now() + 30_000;
  while (!(await zfsFuseRunning(run))) {
    if (Date.now() > deadline) throw new Error('zfs-fuse did not answer within 30 s (zpool list fails)');
    await sleep(200);
  }
}

async function ensurePool(run: Run, dir: string, say: (line: string) => void): Promise<string> {
  await ensureZfsFuse(run);
  const name = sitePoolName(dir);
  const file = path.join(path.resolve(dir), POOL_FILE);
  const pools = (await run(['zpool', 'list', '-H', '-o', 'name'])).stdout.split('\n');
  if (!pools.includes(name)) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    if (!fs.existsSync(file)) fs.writeFileSync(file, '', { mode: 0o600 });
    fs.truncateSync(file, POOL_BYTES);
    // A pool left by an earlier up whose file is still here is imported rather than made anew.
    const imported = await run(['zpool', 'import', '-d', path.dirname(file), name], { okExitCodes: [1] });
    if (imported.exitCode !== 0) await run(['zpool', 'create', '-m', poolMountpoint(dir), name, file]);
    say(`nas-0 stores on ZFS pool ${name} (${file})`);
  }
  return `${name}/imgflow`;
}

async function destroyPool(run: Run, dir: string, say: (line: string) => void): Promise<void> {
  const name = sitePoolName(dir);
  const file = path.join(path.resolve(dir), POOL_FILE);
  if (!fs.existsSync(file)) return;
  if (await zfsFuseRunning(run)) {
    const pools = (await run(['zpool', 'list', '-H', '-o', 'name'])).stdout.split('\n');
    if (pools.includes(name)) await destroyWhenIdle(run, name, poolMountpoint(dir));
  }
  fs.rmSync(file, { force: true });
  fs.rmSync(poolMountpoint(dir), { recursive: true, force: true });
  say(`destroyed pool ${name}`);
}

/**
 * zfs-fuse answers "pool is busy" while the kernel still holds files the stopped workers and
 * tgtd had open under the pool's mounts; they let go within seconds. Past that, the error names
 * the processes that still hold them.
 */
async function destroyWhenIdle(run: Run, name: string, mountpoint: string): Promise<void> {
  const deadline = Date.now() + POOL_BUSY_MS;
  for (;;) {
    const destroyed = await run(['zpool', 'destroy', '-f', name], { okExitCodes: [1] });
    if (destroyed.exitCode === 0) return;
    if (!/pool is busy/.test(destroyed.stderr) || Date.now() > deadline) {
      const holders = (
        await run(['fuser', '-vm', mountpoint], { okExitCodes: [1] }).catch(() => undefined)
      )?.stderr.trim();
      throw new Error(
        `zpool destroy -f ${name}: ${destroyed.stderr.trim()}${holders ? `; held by: ${holders.replace(/\s+/g, ' ')}` : ''}`,
      );
    }
    await sleep(500);
  }
}

// ---------------------------------------------------------------------------------------------
// Pollers

/** The queue each host's workers poll, role by role. */
export function hostQueues(hosts: HostsState, arch: string): { host: string; role: Role; queue: string }[] {
  const queueOf: Record<Role, (host: string) => string> = {
    builder: () => queues.builder(arch),
    nas: queues.nas,
    compute: queues.compute,
    cloud: queues.cloud,
    control: () => CONTROL_QUEUE,
    orchestrator: () => WORKFLOW_QUEUE,
  };
  return hosts.hosts.flatMap((h) => h.roles.map((role) => ({ host: h.name, role, queue: queueOf[role](h.name) })));
}

/** How many workers poll each queue now, as the frontend sees them. */
export async function pollerCounts(
  connection: Connection,
  namespace: string,
  taskQueues: string[],
): Promise<Record<string, number>> {
  const counts = await Promise.all(
    taskQueues.map(async (name) => {
      const workflowQueue = name === WORKFLOW_QUEUE;
      const answer = await connection.workflowService.describeTaskQueue({
        namespace,
        taskQueue: { name },
        taskQueueType: workflowQueue ? 1 : 2,
      });
      return [name, answer.pollers?.length ?? 0] as const;
    }),
  );
  return Object.fromEntries(counts);
}

export interface HostQueueStatus {
  host: string;
  address: string;
  link: 'up' | 'down' | 'absent';
  queue: string;
  /** The host's worker process for that queue's role. */
  worker: 'up' | 'down';
  /** Pollers the frontend sees on the queue; null when the frontend did not answer. */
  pollers: number | null;
}

/** Each host's queues: its worker process and the pollers on the queue; undefined for a cluster without hosts. */
export async function siteStatus(cluster: ClusterState, arch: string): Promise<HostQueueStatus[] | undefined> {
  const hosts = readHostsState(cluster.dir);
  if (!hosts) return undefined;
  const statuses = hostStatus(hosts);
  const wanted = hostQueues(hosts, arch);
  const counts = await viewerConnection(cluster).then(
    async (connection) => {
      try {
        return await pollerCounts(connection, cluster.namespace, [...new Set(wanted.map((q) => q.queue))]);
      } finally {
        await connection.close();
      }
    },
    () => undefined,
  );
  return wanted.map(({ host, role, queue }) => {
    const status = statuses.find((s) => s.host === host)!;
    const worker = status.workers.find((w) => w.role === role);
    return {
      host,
      address: status.address,
      link: status.link,
      queue,
      worker: worker?.running ? 'up' : 'down',
      pollers: counts?.[queue] ?? null,
    };
  });
}

const viewerConnection = (cluster: ClusterState) => clusterConnection(cluster, 10_000, 'viewer');
