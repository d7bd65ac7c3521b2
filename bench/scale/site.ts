/**
 * The scale bench's site: `imgflow cluster up`'s (Temporal on PostgreSQL with mutual TLS, hosts in
 * network namespaces on the cluster's bridge) with nas-0, control-0 (the orchestrator) and the
 * first compute hosts in namespaces of their own, and the other hosts added as worker identities:
 * the remaining NAS hosts in one process, the remaining compute hosts in another, each host on its
 * own queue with its own certificate and token. Each added NAS has a tgtd of its own, listening on
 * the bridge's gateway, so that the namespaced compute hosts reach every NAS across the bridge.
 *
 * A driver is set for every NAS at once: `zfs` (a dataset per NAS in the site's zfs-fuse pool,
 * exported through the NAS's tgtd) or `qcow2` (qcow2 files in the NAS's home, no export: the
 * compute host opens the file).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Run } from '../../activities/runner.js';
import { CONNECTION_ENV } from '../../lib/config.js';
import { processRunning } from '../../lib/processes.js';
import { hostHome, readHostsState, upHosts, type HostsState } from '../../starters/cluster/hosts.js';
import { claimTgtControlPort, releaseClaim } from '../../starters/cluster/network.js';
import { pidOf } from '../../starters/cluster/services.js';
import { clusterDown } from '../../starters/cluster/cluster.js';
import { siteDown, siteUp, workerEnv, type SiteUp } from '../../starters/cluster/site.js';
import { TEMPORAL_SERVICES } from '../../starters/cluster/state.js';
import type { PoolHost, PoolSpec } from './pool.js';

export type Driver = 'zfs' | 'qcow2';
const NAMESPACE = 'imgflow';
const FIRST_EXTRA_PORTAL = 3261;
const POOL_START_MS = 600_000;
const STOP_GRACE_MS = 20_000;

export interface NasHost {
  host: string;
  /** Where its worker runs: its own namespace, or the NAS pool process. */
  namespaced: boolean;
  home: string;
  /** Its tgtd: control port, portal and pid (nas-0's is the site's). */
  tgt: { controlPort: number; portal: string; pid?: number };
  /** Its ZFS dataset under the site's pool. */
  dataset: string;
}

export interface ScaleSite {
  dir: string;
  name: string;
  up: SiteUp;
  hosts: HostsState;
  codecKeys: string;
  nas: NasHost[];
  compute: { host: string; namespaced: boolean }[];
  pools: { nas?: PoolProcess; compute?: PoolProcess };
  driver?: Driver;
}

export interface PoolProcess {
  role: 'nas' | 'compute';
  pid: number;
  log: string;
  hosts: number;
}

export interface SiteSize {
  nas: number;
  compute: number;
  /** Compute hosts in namespaces of their own (the first ones); the rest share a process. */
  namespacedCompute: number;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROJECT = path.resolve(HERE, '..', '..');

function spawnDetached(argv: string[], log: string, env: Record<string, string> = {}): number {
  fs.mkdirSync(path.dirname(log), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(log, 'a', 0o600);
  const child = spawn(argv[0]!, argv.slice(1), {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, IMGFLOW_LOG_PRETTY: '0', ...env },
    cwd: PROJECT,
  });
  child.unref();
  fs.closeSync(fd);
  if (!child.pid) throw new Error(`could not start ${argv[0]}`);
  return child.pid;
}

async function stopGroup(pid: number | undefined, graceMs = STOP_GRACE_MS): Promise<void> {
  if (!pid || !processRunning(pid)) return;
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      /* gone */
    }
  };
  kill('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (processRunning(pid) && !isZombie(pid)) {
    if (Date.now() > deadline) {
      kill('SIGKILL');
      break;
    }
    await sleep(100);
  }
}

function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

const tgtadm = (controlPort: number, ...args: string[]) => ['tgtadm', '-C', String(controlPort), ...args];

async function startTgtd(run: Run, dir: string, nas: NasHost): Promise<void> {
  const log = path.join(dir, 'logs', `${nas.host}.tgtd.log`);
  nas.tgt.pid = spawnDetached(
    ['tgtd', '-f', '-C', String(nas.tgt.controlPort), '--iscsi', `portal=${nas.tgt.portal}`],
    log,
  );
  const deadline = Date.now() + 30_000;
  const show = tgtadm(nas.tgt.controlPort, '--lld', 'iscsi', '--op', 'show', '--mode', 'target');
  while ((await run(show, { okExitCodes: [1, 22, 107] })).exitCode !== 0) {
    if (!processRunning(nas.tgt.pid) || Date.now() > deadline) throw new Error(`tgtd of ${nas.host} did not start`);
    await sleep(200);
  }
}

async function stopTgtd(run: Run, nas: NasHost): Promise<void> {
  if (!nas.tgt.pid) return;
  await run(tgtadm(nas.tgt.controlPort, '--op', 'delete', '--mode', 'system'), {
    okExitCodes: [1, 22, 107],
    timeoutMs: 10_000,
  }).catch(() => undefined);
  await stopGroup(nas.tgt.pid, 10_000);
  for (const file of [
    `/var/run/tgtd/socket.${nas.tgt.controlPort}`,
    `/var/run/tgtd/socket.${nas.tgt.controlPort}.lock`,
  ])
    fs.rmSync(file, { force: true });
}

/** The role settings a NAS's worker gets for a driver. */
export function nasEnv(nas: NasHost, driver: Driver): Record<string, string> {
  return driver === 'zfs'
    ? {
        IMGFLOW_NAS_POOL: nas.dataset,
        IMGFLOW_NAS_EXPORT: 'tgt',
        IMGFLOW_NAS_PORTAL: nas.tgt.portal,
        IMGFLOW_TGT_CONTROL_PORT: String(nas.tgt.controlPort),
      }
    : { IMGFLOW_NAS_POOL: '', IMGFLOW_NAS_EXPORT: 'none' };
}

function poolHost(site: ScaleSite, host: string, env: Record<string, string>): PoolHost {
  const e = CONNECTION_ENV;
  const settings = workerEnv(site.up.cluster.state, host, site.codecKeys);
  return {
    host,
    home: hostHome(site.hosts, host),
    env,
    tls: {
      enabled: true,
      certPath: settings[e.certPath],
      keyPath: settings[e.keyPath],
      caPath: settings[e.caPath],
      serverName: settings[e.serverName],
    },
    apiKeyFile: settings[e.apiKeyFile],
  };
}

async function startPool(site: ScaleSite, role: 'nas' | 'compute', hosts: PoolHost[]): Promise<PoolProcess> {
  const spec: PoolSpec = {
    role,
    address: site.hosts.frontend,
    namespace: NAMESPACE,
    codecKeys: site.codecKeys,
    hosts,
  };
  const specFile = path.join(site.dir, `scale-${role}-pool.json`);
  fs.writeFileSync(specFile, JSON.stringify(spec), { mode: 0o600 });
  const log = path.join(site.dir, 'logs', `scale-${role}-pool.log`);
  fs.rmSync(log, { force: true });
  const script = path.join(HERE, `pool${path.extname(fileURLToPath(import.meta.url))}`);
  const argv = [process.execPath, ...(script.endsWith('.ts') ? ['--import', 'tsx'] : []), script, specFile];
  const pid = spawnDetached(argv, log);
  const deadline = Date.now() + POOL_START_MS;
  for (;;) {
    const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    if (text.includes('"msg":"pool started"')) return { role, pid, log, hosts: hosts.length };
    if (!processRunning(pid) || isZombie(pid) || Date.now() > deadline)
      throw new Error(`the ${role} pool did not start: ${text.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}`);
    await sleep(250);
  }
}

/** The file a NAS's claim on a tgtd control port names as its holder (a claim whose holder is gone is free). */
function claimOwner(dir: string, host: string): string {
  const file = path.join(dir, 'claims', `${host}.tgt`);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, `${host}\n`, { mode: 0o600 });
  return file;
}

/** Brings the site up: the cluster and namespaced hosts, then the added NAS hosts' tgtds and the compute pool. */
export async function scaleSiteUp(
  o: SiteSize & { dir: string; name: string; codecKeys: string; run: Run; say: (line: string) => void },
): Promise<ScaleSite> {
  const namespacedCompute = Array.from({ length: o.namespacedCompute }, (_, i) => `compute-${i}`);
  const up = await siteUp({
    name: o.name,
    dir: o.dir,
    namespace: NAMESPACE,
    compute: o.namespacedCompute,
    codecKeys: o.codecKeys,
    workers: ['nas-0', 'control-0', ...namespacedCompute],
    say: o.say,
  });
  const hosts = up.hosts;
  const nas0 = hosts.hosts.find((h) => h.name === 'nas-0')!;
  const site: ScaleSite = {
    dir: o.dir,
    name: o.name,
    up,
    hosts,
    codecKeys: o.codecKeys,
    nas: [
      {
        host: 'nas-0',
        namespaced: true,
        home: hostHome(hosts, 'nas-0'),
        tgt: { controlPort: hosts.tgt.controlPort!, portal: `${nas0.address}:3260` },
        dataset: up.pool,
      },
    ],
    compute: Array.from({ length: o.compute }, (_, i) => ({
      host: `compute-${i}`,
      namespaced: i < o.namespacedCompute,
    })),
    pools: {},
  };
  for (let i = 1; i < o.nas; i++) {
    const host = `nas-${i}`;
    const nas: NasHost = {
      host,
      namespaced: false,
      home: hostHome(hosts, host),
      tgt: {
        controlPort: claimTgtControlPort(claimOwner(o.dir, host)),
        portal: `${hosts.gateway}:${FIRST_EXTRA_PORTAL + i - 1}`,
      },
      dataset: `${up.pool.split('/')[0]}/${host}`,
    };
    site.nas.push(nas);
    await startTgtd(o.run, o.dir, nas);
  }
  o.say(`tgtd for ${o.nas - 1} more NAS hosts on ${hosts.gateway}:${FIRST_EXTRA_PORTAL}..`);
  const pooled = site.compute.filter((c) => !c.namespaced).map((c) => poolHost(site, c.host, {}));
  if (pooled.length) {
    site.pools.compute = await startPool(site, 'compute', pooled);
    o.say(`${pooled.length} compute hosts' workers in one process (pid ${site.pools.compute.pid})`);
  }
  site.driver = 'zfs';
  await startNasPool(site, 'zfs');
  return site;
}

async function startNasPool(site: ScaleSite, driver: Driver): Promise<void> {
  const pooled = site.nas.filter((n) => !n.namespaced).map((n) => poolHost(site, n.host, nasEnv(n, driver)));
  if (pooled.length) site.pools.nas = await startPool(site, 'nas', pooled);
}

/** Every NAS's workers on `driver`: nas-0's own worker started again with its settings, the NAS pool anew. */
export async function setDriver(site: ScaleSite, driver: Driver, say: (line: string) => void): Promise<void> {
  if (site.driver === driver) return;
  await stopGroup(site.pools.nas?.pid);
  delete site.pools.nas;
  const state = readHostsState(site.dir)!;
  const nas0 = state.workers.find((w) => w.host === 'nas-0' && w.role === 'nas');
  await stopGroup(nas0?.pid);
  const nas = site.nas[0]!;
  site.hosts = await upHosts({
    dir: site.dir,
    compute: site.compute.filter((c) => c.namespaced).length,
    frontendPort: site.up.cluster.state.ports.frontend.grpc,
    workers: ['nas-0'],
    env: {
      'nas-0': { ...workerEnv(site.up.cluster.state, 'nas-0', site.codecKeys), ...nasEnv(nas, driver) },
    },
  });
  await startNasPool(site, driver);
  site.driver = driver;
  say(`every NAS now on ${driver}`);
}

const DOWN_ATTEMPTS = 6;

/**
 * Stops what the bench added, then the site, dropping its databases. zfs-fuse may call the pool
 * busy for a while after its users are gone (seen until the Temporal services had stopped, and
 * while other processes' private mount namespaces held a copy of its mounts): the services are
 * then stopped first and the site's `down` tried again, for a minute. Past that the error names
 * the pool; the caller keeps the directory (the pool may still be mounted in it).
 */
export async function scaleSiteDown(site: ScaleSite, run: Run, say: (line: string) => void): Promise<void> {
  await stopGroup(site.pools.nas?.pid);
  await stopGroup(site.pools.compute?.pid);
  for (const nas of site.nas.filter((n) => !n.namespaced)) {
    await stopTgtd(run, nas);
    releaseClaim('tgt', nas.tgt.controlPort, claimOwner(site.dir, nas.host));
  }
  for (let attempt = 1; ; attempt++) {
    try {
      await siteDown(site.dir, { dropDatabases: true, say });
      return;
    } catch (err) {
      if (attempt === DOWN_ATTEMPTS) throw err;
      if (attempt === 1) await clusterDown(site.dir);
      say(`taking the site down, attempt ${attempt}: ${(err as Error).message.slice(0, 120)}; trying again`);
      await sleep(10_000);
    }
  }
}

/** The processes whose CPU the bench reads, by what they are. */
export function siteProcesses(site: ScaleSite): { name: string; pids: number[] }[] {
  const state = site.up.cluster.state;
  const hosts = readHostsState(site.dir)!;
  const worker = (host: string) => hosts.workers.filter((w) => w.host === host).map((w) => w.pid);
  const namespacedCompute = site.compute.filter((c) => c.namespaced).map((c) => c.host);
  return [
    ...TEMPORAL_SERVICES.map((s) => ({
      name: `temporal ${s}`,
      pids: [pidOf(state, s)].filter((p) => p !== undefined),
    })),
    { name: 'control-0 (orchestrator, control)', pids: worker('control-0') },
    { name: 'nas-0 worker (own netns)', pids: worker('nas-0') },
    { name: `nas pool (${site.pools.nas?.hosts ?? 0} hosts)`, pids: site.pools.nas ? [site.pools.nas.pid] : [] },
    { name: `compute workers (own netns, ${namespacedCompute.length})`, pids: namespacedCompute.flatMap(worker) },
    {
      name: `compute pool (${site.pools.compute?.hosts ?? 0} hosts)`,
      pids: site.pools.compute ? [site.pools.compute.pid] : [],
    },
    {
      name: `tgtd (${site.nas.length})`,
      pids: [hosts.tgt.pid, ...site.nas.slice(1).map((n) => n.tgt.pid)].filter((p) => p !== undefined),
    },
  ];
}
