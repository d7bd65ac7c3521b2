/**
 * A cluster's hosts on this one machine, each in a network namespace of its own with its own
 * address on the cluster's bridge: `builder-0`, `nas-0`, `compute-0`..`compute-<N-1>`, `cloud-0`
 * and `control-0` (which also runs the orchestrator). Each host runs its role's `imgflow worker`
 * inside its namespace, dialling Temporal's frontend on the bridge's host side; the NAS serves
 * iSCSI from a tgtd of its own, inside `nas-0`, on the NAS's address. Everything made is recorded
 * in the cluster's state file, so that `downHosts` removes exactly that, and `upHosts` run again
 * finishes what is missing. Commands go into a namespace with `nsenter --net` (never `ip netns
 * exec`, whose private mount table would hide zfs-fuse mounts made later).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createRunner, type CommandOptions, type CommandResult, type Run } from '../../activities/runner.js';
import { checkInt, InputError } from '../../common/names.js';
import type { Role } from '../../common/queues.js';
import { machineMirror } from '../../activities/builder/recipe.js';
import { createLogger } from '../../lib/logger.js';
import { listening } from './services.js';
import { freePorts, MAX_COMPUTE } from './state.js';
import {
  checkPrefix,
  claimSubnet,
  claimTgtControlPort,
  ensureBridge,
  ensureHostLink,
  gatewayOf,
  hostAddress,
  linkState,
  names,
  netnsPath,
  newPrefix,
  pidsIn,
  releaseClaim,
  removeBridge,
  removeHostLink,
} from './network.js';

export const STATE_FILE = 'hosts.json';
export { MAX_COMPUTE };
export const ISCSI_PORT = 3260;
const METRICS_PORT = 9464;
const WORKER_START_MS = 180_000;
const STOP_GRACE_MS = 15_000;

export interface HostsSpec {
  /** The cluster's directory: the state file, each host's home and the logs. */
  dir: string;
  compute: number;
  /** The frontend's port on the gateway; workers dial `<gateway>:<port>`. Needed once workers start. */
  frontendPort?: number;
  /** Temporal namespace the workers poll (default `imgflow`). */
  namespace?: string;
  /** Hosts whose workers run; all when absent, none for an empty list (the network and tgtd only). */
  workers?: string[];
  /** More environment for a host's workers, by host name (TLS settings, ZFS pools, PATH). */
  env?: Record<string, Record<string, string>>;
}

export interface HostEntry {
  name: string;
  roles: Role[];
  address: string;
  netns: string;
  /** The veth's end on the bridge: its link state is the host's cable. */
  veth: string;
  peer: string;
}

export interface WorkerEntry {
  host: string;
  role: Role;
  pid: number;
  log: string;
}

export interface HostsState {
  dir: string;
  prefix: string;
  /** Index of the cluster's /24 in 198.18.0.0/15; -1 until claimed. */
  subnet: number;
  bridge: string;
  gateway: string;
  frontend: string;
  namespace: string;
  hosts: HostEntry[];
  tgt: { controlPort?: number; pid?: number; log: string };
  /** The package mirror's proxy on the gateway: builders have no other way out. */
  mirrorProxy?: { port: number; pid?: number; mirrors: string[]; log: string };
  workers: WorkerEntry[];
}

/** The cluster's hosts and their roles, in address order. */
export function hostPlan(compute: number): { name: string; roles: Role[] }[] {
  checkInt('compute', compute, 1, MAX_COMPUTE);
  return [
    { name: 'builder-0', roles: ['builder'] },
    { name: 'nas-0', roles: ['nas'] },
    ...Array.from({ length: compute }, (_, i) => ({ name: `compute-${i}`, roles: ['compute'] as Role[] })),
    { name: 'cloud-0', roles: ['cloud'] },
    { name: 'control-0', roles: ['control', 'orchestrator'] },
  ];
}

// ---------------------------------------------------------------------------------------------
// State

const statePath = (dir: string) => path.join(dir, STATE_FILE);

export function readHostsState(dir: string): HostsState | undefined {
  const file = statePath(path.resolve(dir));
  if (!fs.existsSync(file)) return undefined;
  const state = JSON.parse(fs.readFileSync(file, 'utf8')) as HostsState;
  checkPrefix(state.prefix);
  return state;
}

function saveState(state: HostsState): void {
  const file = statePath(state.dir);
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

export const hostHome = (state: Pick<HostsState, 'dir'>, host: string) => path.join(state.dir, 'hosts', host);

export function hostOf(state: HostsState, host: string): HostEntry {
  const found = state.hosts.find((h) => h.name === host);
  if (!found) throw new InputError('host', `one of ${state.hosts.map((h) => h.name).join(', ')}`, host);
  return found;
}

function newState(dir: string, spec: HostsSpec): HostsState {
  const prefix = newPrefix();
  return {
    dir,
    prefix,
    subnet: -1,
    bridge: names(prefix).bridge,
    gateway: '',
    frontend: '',
    namespace: spec.namespace ?? 'imgflow',
    hosts: [],
    tgt: { log: path.join(dir, 'logs', 'nas-0.tgtd.log') },
    workers: [],
  };
}

/** The hosts of `compute` compute nodes on the state's subnet (already listed ones keep their entries). */
function placeHosts(state: HostsState, compute: number): HostEntry[] {
  const n = names(state.prefix);
  return hostPlan(compute).map((host, slot) => ({
    ...host,
    address: hostAddress(state.subnet, slot),
    netns: n.netns(host.name),
    veth: n.veth(slot),
    peer: n.peer(slot),
  }));
}

// ---------------------------------------------------------------------------------------------
// Processes

/**
 * A live process (not a zombie) running `comm`, or nsenter a moment before it becomes `comm`:
 * a recorded pid that another program reused is not ours.
 */
function running(pid: number | undefined, comm: string): boolean {
  if (!pid) return false;
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const name = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return !/^State:\s+Z/m.test(status) && (name === comm || name === 'nsenter');
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals, group = false): void {
  try {
    process.kill(group ? -pid : pid, sig);
  } catch {
    /* already gone */
  }
}

async function waitGone(pid: number, comm: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (running(pid, comm)) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

/** Starts `argv` inside the host's namespace, detached, its output appended to `log`; returns its pid. */
function spawnOn(host: HostEntry, argv: string[], log: string, env: Record<string, string>, cwd?: string): number {
  return spawnLogged(['nsenter', `--net=${netnsPath(host.netns)}`, '--', ...argv], log, env, cwd);
}

/** Starts `argv` detached, in a process group of its own, its output appended to `log`; returns its pid. */
function spawnLogged(argv: string[], log: string, env: Record<string, string>, cwd?: string): number {
  fs.mkdirSync(path.dirname(log), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(log, 'a', 0o600);
  const child = spawn(argv[0]!, argv.slice(1), {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
    ...(cwd ? { cwd } : {}),
  });
  child.unref();
  fs.closeSync(fd);
  if (!child.pid) throw new Error(`could not start ${argv.join(' ').slice(0, 200)}`);
  return child.pid;
}

function tail(file: string, lines = 5): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' | ');
  } catch {
    return '';
  }
}

/** The imgflow CLI beside this module: compiled JavaScript, or the TypeScript sources through tsx. */
function imgflowCommand(): { argv: string[]; cwd: string } {
  const entry = ['imgflow.js', 'imgflow.ts']
    .map((file) => fileURLToPath(new URL(`../${file}`, import.meta.url)))
    .find((file) => fs.existsSync(file))!;
  return {
    argv: [process.execPath, ...(entry.endsWith('.ts') ? ['--import', 'tsx'] : []), entry],
    cwd: path.dirname(path.dirname(entry)),
  };
}

// ---------------------------------------------------------------------------------------------
// tgtd inside nas-0

const tgtSocket = (controlPort: number) => `/var/run/tgtd/socket.${controlPort}`;

function tgtadm(state: HostsState, ...args: string[]): string[] {
  return ['tgtadm', '-C', String(state.tgt.controlPort), ...args];
}

async function ensureTgtd(run: Run, state: HostsState, nas: HostEntry): Promise<void> {
  if (running(state.tgt.pid, 'tgtd')) return;
  state.tgt.controlPort ??= claimTgtControlPort(statePath(state.dir));
  saveState(state);
  const argv = ['tgtd', '-f', '-C', String(state.tgt.controlPort), '--iscsi', `portal=${nas.address}:${ISCSI_PORT}`];
  state.tgt.pid = spawnOn(nas, argv, state.tgt.log, {});
  saveState(state);
  const deadline = Date.now() + 30_000;
  while (
    (await run(tgtadm(state, '--lld', 'iscsi', '--op', 'show', '--mode', 'target'), { okExitCodes: [1, 22, 107] }))
      .exitCode !== 0
  ) {
    if (!running(state.tgt.pid, 'tgtd') || Date.now() > deadline)
      throw new Error(`tgtd on ${nas.name} did not start: ${tail(state.tgt.log)}`);
    await sleep(200);
  }
}

/** tgtd ignores SIGTERM: it is asked to shut down through its control port, and killed if it will not. */
async function stopTgtd(run: Run, state: HostsState): Promise<void> {
  const pid = state.tgt.pid;
  if (pid && running(pid, 'tgtd')) {
    await run(tgtadm(state, '--op', 'delete', '--mode', 'system'), { okExitCodes: [1, 22, 107], timeoutMs: 10_000 });
    if (!(await waitGone(pid, 'tgtd', 10_000))) {
      signal(pid, 'SIGKILL');
      await waitGone(pid, 'tgtd', 5000);
    }
  }
  delete state.tgt.pid;
  // tgtd leaves its control socket and lock file behind.
  if (state.tgt.controlPort !== undefined && !running(pid, 'tgtd')) {
    for (const file of [tgtSocket(state.tgt.controlPort), `${tgtSocket(state.tgt.controlPort)}.lock`])
      fs.rmSync(file, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The mirror's proxy on the gateway

async function ensureMirrorProxy(state: HostsState): Promise<void> {
  const mirror = machineMirror();
  if (!mirror || running(state.mirrorProxy?.pid, 'node')) return;
  const mirrors = [new URL(mirror).host];
  const port = state.mirrorProxy?.port ?? (await freePorts(1, state.gateway))[0]!;
  const log = path.join(state.dir, 'logs', 'mirror-proxy.log');
  const script = fileURLToPath(
    new URL(`./mirror-proxy${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url),
  );
  const argv = [
    process.execPath,
    ...(script.endsWith('.ts') ? ['--import', 'tsx'] : []),
    script,
    state.gateway,
    String(port),
    mirrors.join(','),
  ];
  state.mirrorProxy = { port, mirrors, log, pid: spawnLogged(argv, log, {}, imgflowCommand().cwd) };
  saveState(state);
  const deadline = Date.now() + 30_000;
  while (!(await listening(state.gateway, port))) {
    if (!running(state.mirrorProxy.pid, 'node') || Date.now() > deadline)
      throw new Error(`the mirror proxy did not start: ${tail(log)}`);
    await sleep(100);
  }
}

async function stopMirrorProxy(state: HostsState): Promise<void> {
  const pid = state.mirrorProxy?.pid;
  if (pid && running(pid, 'node')) {
    signal(pid, 'SIGTERM');
    if (!(await waitGone(pid, 'node', 5000))) signal(pid, 'SIGKILL');
  }
  delete state.mirrorProxy;
}

// ---------------------------------------------------------------------------------------------
// Workers

/**
 * Settings a role's worker takes from its host: the NAS exports through its own tgtd on its own
 * address; NAS and compute hosts receive sync streams on their own addresses.
 */
function roleEnv(state: HostsState, host: HostEntry, role: Role): Record<string, string> {
  const streams = { IMGFLOW_STREAM_ADDRESS: host.address };
  if (role === 'builder')
    return state.mirrorProxy ? { IMGFLOW_MIRROR_PROXY: `http://${state.gateway}:${state.mirrorProxy.port}` } : {};
  if (role === 'compute') return streams;
  if (role !== 'nas') return {};
  return {
    ...streams,
    IMGFLOW_NAS_EXPORT: 'tgt',
    IMGFLOW_NAS_PORTAL: `${host.address}:${ISCSI_PORT}`,
    IMGFLOW_TGT_CONTROL_PORT: String(state.tgt.controlPort),
  };
}

function startWorker(state: HostsState, host: HostEntry, role: Role, extraEnv: Record<string, string>): WorkerEntry {
  const { argv, cwd } = imgflowCommand();
  const log = path.join(state.dir, 'logs', `${host.name}.${role}.log`);
  const metrics = `${host.address}:${METRICS_PORT + host.roles.indexOf(role)}`;
  const args = [
    '--address',
    state.frontend,
    '--namespace',
    state.namespace,
    '--home',
    hostHome(state, host.name),
    'worker',
    '--role',
    role,
    '--host',
    host.name,
    '--metrics',
    metrics,
  ];
  const env = { IMGFLOW_LOG_PRETTY: '0', ...roleEnv(state, host, role), ...extraEnv };
  fs.mkdirSync(hostHome(state, host.name), { recursive: true, mode: 0o700 });
  return { host: host.name, role, pid: spawnOn(host, [...argv, ...args], log, env, cwd), log };
}

/** Waits for the worker's "worker started" log line; a worker that exits first fails with its last lines. */
async function waitStarted(worker: WorkerEntry): Promise<void> {
  const deadline = Date.now() + WORKER_START_MS;
  for (;;) {
    const text = fs.existsSync(worker.log) ? fs.readFileSync(worker.log, 'utf8') : '';
    if (
      text.split('\n').some((line) => line.includes('"msg":"worker started"') && line.includes(`"pid":${worker.pid},`))
    )
      return;
    if (!running(worker.pid, 'node'))
      throw new Error(`the ${worker.role} worker on ${worker.host} exited: ${tail(worker.log)}`);
    if (Date.now() > deadline)
      throw new Error(
        `the ${worker.role} worker on ${worker.host} did not start in ${WORKER_START_MS / 1000}s: ${tail(worker.log)}`,
      );
    await sleep(250);
  }
}

/** SIGTERM drains a worker; one still there after the grace is killed with its process group. */
async function stopWorker(worker: WorkerEntry): Promise<void> {
  if (!running(worker.pid, 'node')) return;
  signal(worker.pid, 'SIGTERM', true);
  if (await waitGone(worker.pid, 'node', STOP_GRACE_MS)) return;
  signal(worker.pid, 'SIGKILL', true);
  await waitGone(worker.pid, 'node', 5000);
}

// ---------------------------------------------------------------------------------------------
// The functions `imgflow cluster` calls

function quietRunner(): Run {
  return createRunner(createLogger('imgflow-hosts', process.env.IMGFLOW_LOG_LEVEL ?? 'warn'));
}

/**
 * Brings the hosts up: the bridge and its gateway address, a namespace per host on its own
 * address, tgtd inside `nas-0`, and the workers of `spec.workers` (all by default). Safe to run
 * again: what is there is kept, what is missing is made.
 */
export async function upHosts(
  spec: HostsSpec,
  say: (line: string) => void = () => {},
  run: Run = quietRunner(),
): Promise<HostsState> {
  const dir = path.resolve(spec.dir);
  // Checked before anything is made: a wrong host name changes nothing.
  const plan = hostPlan(spec.compute).map((h) => h.name);
  const wanted = spec.workers ?? plan;
  for (const name of wanted)
    if (!plan.includes(name)) throw new InputError('workers', `hosts among ${plan.join(', ')}`, name);
  const frontendPort =
    spec.frontendPort === undefined ? undefined : checkInt('frontendPort', spec.frontendPort, 1, 65_535);
  if (wanted.length && frontendPort === undefined)
    throw new InputError('frontendPort', "the Temporal frontend's port on the gateway (the workers dial it)");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const state = readHostsState(dir) ?? newState(dir, spec);
  saveState(state);
  if (state.subnet < 0) {
    state.subnet = await claimSubnet(run, statePath(dir));
    state.gateway = gatewayOf(state.subnet);
    saveState(state);
  }
  if (frontendPort !== undefined) state.frontend = `${state.gateway}:${frontendPort}`;
  const planned = placeHosts(state, spec.compute);
  const dropped = state.hosts.filter((h) => !planned.some((p) => p.name === h.name));
  if (dropped.length)
    throw new InputError(
      'compute',
      `at least the ${state.hosts.length - 4} compute hosts already up (imgflow cluster down first)`,
      spec.compute,
    );
  state.hosts = planned;
  saveState(state);

  await ensureBridge(run, state.bridge, state.gateway);
  for (const host of state.hosts) await ensureHostLink(run, { ...host, bridge: state.bridge });
  say(`network ${state.gateway}/24 on bridge ${state.bridge}: ${state.hosts.length} hosts`);
  const nas = hostOf(state, 'nas-0');
  await ensureTgtd(run, state, nas);
  say(`tgtd on nas-0 serves ${nas.address}:${ISCSI_PORT} (control port ${state.tgt.controlPort})`);
  await ensureMirrorProxy(state);
  if (state.mirrorProxy)
    say(
      `builders reach ${state.mirrorProxy.mirrors.join(', ')} through http://${state.gateway}:${state.mirrorProxy.port}`,
    );

  const started: WorkerEntry[] = [];
  for (const host of state.hosts.filter((h) => wanted.includes(h.name))) {
    for (const role of host.roles) {
      const known = state.workers.find((w) => w.host === host.name && w.role === role);
      if (known && running(known.pid, 'node')) continue;
      const worker = startWorker(state, host, role, spec.env?.[host.name] ?? {});
      state.workers = [...state.workers.filter((w) => w !== known), worker];
      started.push(worker);
      saveState(state);
    }
  }
  for (const worker of started) {
    await waitStarted(worker);
    say(`${worker.role} worker on ${worker.host} (pid ${worker.pid}) polls ${state.frontend}`);
  }
  return state;
}

/**
 * Removes everything the hosts' `up` made: workers (drained, then killed), tgtd with its targets,
 * any process left in a namespace, the namespaces with their veths, the bridge with its address,
 * and the claims on subnet and control port. Logs and the hosts' homes stay in the cluster's dir.
 */
export async function downHosts(
  state: HostsState,
  say: (line: string) => void = () => {},
  run: Run = quietRunner(),
): Promise<void> {
  await Promise.all(state.workers.map(stopWorker));
  state.workers = [];
  await stopTgtd(run, state);
  await stopMirrorProxy(state);
  saveState(state);
  const hosts = state.hosts;
  for (const host of hosts) {
    // Commands the workers left running: each had a process group of its own.
    for (
      let left = await pidsIn(run, host.netns), tries = 0;
      left.length && tries < 50;
      left = await pidsIn(run, host.netns), tries++
    ) {
      for (const pid of left) signal(pid, 'SIGKILL');
      await sleep(100);
    }
    await removeHostLink(run, host);
  }
  await removeBridge(run, state.bridge);
  const owner = statePath(state.dir);
  if (state.tgt.controlPort !== undefined) releaseClaim('tgt', state.tgt.controlPort, owner);
  if (state.subnet >= 0) releaseClaim('subnet', state.subnet, owner);
  fs.rmSync(owner, { force: true });
  say(`removed ${hosts.length} hosts, bridge ${state.bridge} and ${state.gateway || 'no'} gateway`);
}

export interface HostStatus {
  host: string;
  address: string;
  /** Whether the host's namespace exists. */
  up: boolean;
  /** The host's cable: its veth on the bridge. */
  link: 'up' | 'down' | 'absent';
  workers: { role: Role; pid: number; running: boolean }[];
  /** nas-0's iSCSI target daemon. */
  tgtd?: { pid?: number; running: boolean; controlPort?: number };
}

export function hostStatus(state: HostsState): HostStatus[] {
  return state.hosts.map((host) => ({
    host: host.name,
    address: host.address,
    up: fs.existsSync(netnsPath(host.netns)),
    link: linkState(host.veth),
    workers: state.workers
      .filter((w) => w.host === host.name)
      .map((w) => ({ role: w.role, pid: w.pid, running: running(w.pid, 'node') })),
    ...(host.name === 'nas-0'
      ? {
          tgtd: {
            ...(state.tgt.pid ? { pid: state.tgt.pid } : {}),
            running: running(state.tgt.pid, 'tgtd'),
            ...(state.tgt.controlPort ? { controlPort: state.tgt.controlPort } : {}),
          },
        }
      : {}),
  }));
}

/** Plugs or unplugs a host's cable (its veth on the bridge): down, the host reaches nothing and nothing reaches it. */
export async function setLink(
  state: HostsState,
  host: string,
  updown: 'up' | 'down',
  run: Run = quietRunner(),
): Promise<void> {
  if (updown !== 'up' && updown !== 'down') throw new InputError('link', 'up or down', updown);
  await run(['ip', 'link', 'set', hostOf(state, host).veth, updown]);
}

/** A runner whose commands run inside the host's network namespace. */
export function onHost(state: HostsState, host: string, run: Run = quietRunner()): Run {
  const entry = hostOf(state, host);
  return (argv, options) => run(['nsenter', `--net=${netnsPath(entry.netns)}`, '--', ...argv], options);
}

/** Runs one command (argv, never a shell) inside the host's network namespace. */
export function runOn(
  state: HostsState,
  host: string,
  argv: readonly string[],
  options?: CommandOptions,
): Promise<CommandResult> {
  return onHost(state, host)(argv, options);
}
