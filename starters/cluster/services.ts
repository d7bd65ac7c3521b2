/**
 * The cluster's processes: each Temporal service in a process of its own (so any one can be killed
 * and restarted alone), the key set server and the Web UI server. Each is started detached in its
 * own process group with its pid file and log in the state directory, and stopped by that pid only.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processRunning } from '../../lib/processes.js';
import type { ServerBinaries } from './build.js';
import { configDir, SERVER_ENV } from './server-config.js';
import {
  logFile,
  runFile,
  TEMPORAL_SERVICES,
  type ClusterState,
  type ProcessName,
  type TemporalService,
} from './state.js';

function spawnLogged(state: ClusterState, name: ProcessName, command: string, args: string[], cwd = state.dir): number {
  fs.mkdirSync(path.dirname(logFile(state, name)), { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.dirname(runFile(state, name)), { recursive: true, mode: 0o700 });
  const log = fs.openSync(logFile(state, name), 'a', 0o600);
  const child = spawn(command, args, { detached: true, stdio: ['ignore', log, log], cwd });
  child.unref();
  fs.closeSync(log);
  fs.writeFileSync(runFile(state, name), `${child.pid}\n`, { mode: 0o600 });
  return child.pid!;
}

/** The recorded pid of a process, when it is still running. */
export function pidOf(state: ClusterState, name: ProcessName): number | undefined {
  try {
    const pid = Number(fs.readFileSync(runFile(state, name), 'utf8'));
    return pid > 0 && processRunning(pid) && !isZombie(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

export function startService(state: ClusterState, bins: ServerBinaries, service: TemporalService): number {
  const existing = pidOf(state, service);
  if (existing) return existing;
  return spawnLogged(state, service, bins.server, [
    '--root',
    state.dir,
    '--config',
    path.relative(state.dir, configDir(state)),
    '--env',
    SERVER_ENV,
    'start',
    '--service',
    service,
  ]);
}

const HERE = fileURLToPath(import.meta.url);
/** The project's root (or dist/): where `tsx` and the other packages resolve from. */
const PROJECT = path.resolve(path.dirname(HERE), '..', '..');

/** Runs one of this folder's small modules the way this process runs: compiled, or from sources. */
function startHelper(state: ClusterState, name: ProcessName, module: string, args: (string | number)[]): number {
  const script = path.join(path.dirname(HERE), `${module}${path.extname(HERE)}`);
  const argv = [...(script.endsWith('.ts') ? ['--import', 'tsx'] : []), script, ...args.map(String)];
  return pidOf(state, name) ?? spawnLogged(state, name, process.execPath, argv, PROJECT);
}

export function startKeysServer(state: ClusterState): number {
  return startHelper(state, 'keys', 'keys-server', [state.signingKey.jwksFile, state.ports.keys]);
}

export function startUiFront(state: ClusterState, tokenFile: string): number {
  return startHelper(state, 'ui-front', 'ui-front', [state.ports.ui, state.ports.uiServer, tokenFile]);
}

export function startUi(state: ClusterState, bins: ServerBinaries, uiConfigDir: string): number | undefined {
  if (!bins.ui) return undefined;
  return (
    pidOf(state, 'ui') ??
    spawnLogged(state, 'ui', bins.ui, [
      '--root',
      state.dir,
      '--config',
      path.relative(state.dir, uiConfigDir),
      '--env',
      SERVER_ENV,
      'start',
    ])
  );
}

/** Ends a process by its recorded pid: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopProcess(
  state: ClusterState,
  name: ProcessName,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 15_000,
): Promise<boolean> {
  const pid = pidOf(state, name);
  fs.rmSync(runFile(state, name), { force: true });
  if (!pid) return false;
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      /* already gone */
    }
  };
  kill(signal);
  const deadline = Date.now() + graceMs;
  while (processRunning(pid) && !isZombie(pid)) {
    if (Date.now() > deadline) {
      kill('SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Whether something accepts TCP connections on `host:port` now. */
export function listening(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Where a service answers: its gRPC port; the system worker serves none, only its membership port. */
export function serviceAddress(state: ClusterState, name: TemporalService): { host: string; port: number } {
  const host = name === 'frontend' ? state.listen : '127.0.0.1';
  return { host, port: name === 'worker' ? state.ports.worker.membership : state.ports[name].grpc };
}

/** Waits until the service's port accepts connections, or its process ends. */
export async function waitListening(state: ClusterState, name: TemporalService, timeoutMs: number): Promise<void> {
  const { host, port } = serviceAddress(state, name);
  const deadline = Date.now() + timeoutMs;
  while (!(await listening(host, port))) {
    if (!pidOf(state, name)) throw new Error(`the ${name} service exited; see ${logFile(state, name)}`);
    if (Date.now() > deadline)
      throw new Error(
        `the ${name} service did not listen on ${host}:${port} within ${timeoutMs / 1000}s; see ${logFile(state, name)}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface ProcessStatus {
  name: ProcessName;
  state: 'up' | 'down';
  pid: number | null;
  port: number | null;
  address: string | null;
}

export async function processStatuses(state: ClusterState): Promise<ProcessStatus[]> {
  const names: ProcessName[] = [...TEMPORAL_SERVICES, 'keys', ...(state.ui ? (['ui', 'ui-front'] as const) : [])];
  return Promise.all(
    names.map(async (name) => {
      const pid = pidOf(state, name) ?? null;
      const { host, port } =
        name === 'keys' || name === 'ui' || name === 'ui-front'
          ? {
              host: '127.0.0.1',
              port: { keys: state.ports.keys, ui: state.ports.uiServer, 'ui-front': state.ports.ui }[name],
            }
          : serviceAddress(state, name);
      const up = pid !== null && (await listening(host, port));
      return { name, state: up ? ('up' as const) : ('down' as const), pid, port, address: `${host}:${port}` };
    }),
  );
}
