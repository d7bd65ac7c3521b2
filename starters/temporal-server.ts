/**
 * Provisions the Temporal dev server imgflow runs on out of the box: finds or builds the pinned
 * Temporal CLI, starts the server detached with a persistent SQLite file and the Web UI, and
 * registers imgflow's namespace and search attributes. A server that already answers is reused.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Connection } from '@temporalio/client';
import { SA } from '../common/search-attributes.js';
import { paths, type Config } from '../lib/config.js';
import { InputError } from '../common/names.js';
import { connectionSettings, type ConnectionSettings } from '../lib/connection.js';
import { homeModes } from '../lib/modes.js';
import { sdk } from './sdk.js';
import { ensureTemporalCli } from './temporal-cli.js';

/**
 * Workers' heartbeats kept and listed (ListWorkers): a worker that stops says so in its last
 * heartbeat, so a command finds a stopped orchestrator at once, while the queue still lists its
 * pollers for minutes. The production cluster's dynamic configuration sets the same.
 */
export const WORKER_LIVENESS = {
  'frontend.WorkerHeartbeatsEnabled': true,
  'frontend.ListWorkersEnabled': true,
} as const;

export { ensureTemporalCli, findTemporalCli, TEMPORAL_CLI_VERSION } from './temporal-cli.js';

export interface ServerProcess {
  pid: number;
  address: string;
  uiUrl?: string;
}

export interface DevServerOptions {
  cli: string;
  port: number;
  /** Omit for a headless server. */
  uiPort?: number;
  dbFile: string;
  logFile: string;
  namespace: string;
  /** The address it listens on (default loopback); a cluster's gateway for workers in its hosts' namespaces. */
  ip?: string;
}

/** Starts a dev server detached from this process; it outlives the CLI that started it. */
export function spawnDevServer(o: DevServerOptions): ServerProcess {
  // Its database holds every workflow's history: readable by its owner only (the umask below makes
  // the SQLite file and its journals so), unless IMGFLOW_HOME_MODE widens it.
  const modes = homeModes();
  fs.mkdirSync(path.dirname(o.dbFile), { recursive: true, mode: modes.dir });
  fs.chmodSync(path.dirname(o.dbFile), modes.dir);
  const log = fs.openSync(o.logFile, 'a', modes.file);
  const ip = o.ip ?? '127.0.0.1';
  const argv = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(o.port),
    '--db-filename',
    o.dbFile,
    '--namespace',
    o.namespace,
  ];
  argv.push(...(o.uiPort ? ['--ui-port', String(o.uiPort)] : ['--headless']));
  // imgflow's search attributes exist from the first moment, so a command that reaches a server
  // just started never finds its listings refused (ensureSearchAttributes covers older databases).
  for (const key of Object.values(SA))
    argv.push('--search-attribute', `${key.name}=${key.type === 'KEYWORD' ? 'Keyword' : 'KeywordList'}`);
  argv.push('--log-format', 'json', '--log-level', 'warn');
  // WAL with normal sync: durable across a server crash, without an fsync on every history write.
  argv.push('--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', 'synchronous=normal');
  // One partition per task queue: a single-host server gains nothing from more, and a task written
  // to a partition no poller is on waits to be forwarded.
  argv.push(
    '--dynamic-config-value',
    'matching.numTaskqueueReadPartitions=1',
    '--dynamic-config-value',
    'matching.numTaskqueueWritePartitions=1',
  );
  argv.push(...Object.keys(WORKER_LIVENESS).flatMap((key) => ['--dynamic-config-value', `${key}=true`]));
  // A child inherits its parent's umask: set for the spawn only, so this process's own files are unaffected.
  const umask = process.umask(modes.umask);
  let child;
  try {
    child = spawn(o.cli, argv, { detached: true, stdio: ['ignore', log, log] });
  } finally {
    process.umask(umask);
  }
  child.unref();
  if (fs.existsSync(o.dbFile)) fs.chmodSync(o.dbFile, modes.file);
  fs.closeSync(log);
  return { pid: child.pid!, address: `${ip}:${o.port}`, ...(o.uiPort ? { uiUrl: `http://${ip}:${o.uiPort}` } : {}) };
}

/** Waits between connection attempts: from a quarter second, doubling, never more than 4 s. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 4000;

/**
 * Connects, retrying with backoff until `timeoutMs`: a loaded host may take a while to accept or to
 * finish its TLS handshake, and a server that restarts refuses for a moment. Gives the last error
 * when nothing answered in time.
 */
async function tryConnect(target: string | ConnectionSettings, timeoutMs: number): Promise<Connection | Error> {
  const settings = typeof target === 'string' ? { address: target, tls: false as const } : target;
  const deadline = Date.now() + timeoutMs;
  for (let pause = BACKOFF_FIRST_MS; ; pause = Math.min(pause * 2, BACKOFF_MAX_MS)) {
    try {
      // Each attempt may take what is left, but at least the half second a handshake needs.
      return await sdk.Connection.connect({
        ...settings,
        connectTimeout: Math.max(500, Math.min(10_000, deadline - Date.now())),
      });
    } catch (err) {
      const left = deadline - Date.now();
      if (left <= 0) return err as Error;
      await new Promise((r) => setTimeout(r, Math.min(pause, left)));
    }
  }
}

/** Connects, retrying until `timeoutMs`; resolves to undefined when nothing answers in time. */
export async function connectWithin(
  target: string | ConnectionSettings,
  timeoutMs: number,
): Promise<Connection | undefined> {
  const result = await tryConnect(target, timeoutMs);
  return result instanceof Error ? undefined : result;
}

/** `12s`, or `1.5s` */
function secondsText(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))}s`;
}

/**
 * Connects within `timeoutMs` or fails in one line naming the address, the bound and why (refused,
 * TLS, unreachable). Bad input (exit 2): nothing was started, and the address is what to check.
 */
export async function connectOrFail(
  settings: ConnectionSettings,
  timeoutMs: number,
  hint: string,
): Promise<Connection> {
  const result = await tryConnect(settings, timeoutMs);
  if (!(result instanceof Error)) return result;
  const why = result.message.split('\n')[0]!.replace(/^\d+ [A-Z_]+: /, '');
  throw new InputError(
    '--address',
    `a Temporal server answering within ${secondsText(timeoutMs)}, the --connect-timeout bound (${why}; ${hint})`,
    settings.address,
  );
}

/** Waits until the namespace answers (the dev server creates it a moment after it listens). */
export async function waitForNamespace(connection: Connection, namespace: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await connection.workflowService.describeNamespace({ namespace });
      return;
    } catch (err) {
      if (Date.now() >= deadline)
        throw new Error(`namespace ${namespace} is not there: ${(err as Error).message.split('\n')[0]}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Registers imgflow's search attributes on the namespace where they are missing. */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<void> {
  const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
  const missing = Object.values(SA).filter((key) => !customAttributes?.[key.name]);
  if (missing.length === 0) return;
  const indexed: Record<string, number> = { KEYWORD: 2, KEYWORD_LIST: 7 };
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((key) => [key.name, indexed[key.type]!])),
  });
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):(\d+)$/;
/** Where imgflow can start the dev server itself: it listens on 127.0.0.1, its Web UI 1000 ports up. */
const DEV_SERVER = /^127\.0\.0\.1:(\d+)$/;
const MAX_DEV_PORT = 65535 - 1000;

/** The dev server's port for a loopback address with nothing on it, or a one-line refusal of an address it cannot serve. */
function devServerPort(address: string): number {
  const m = DEV_SERVER.exec(address);
  const port = Number(m?.[1]);
  if (!m || port > MAX_DEV_PORT) {
    throw new InputError(
      'address',
      `127.0.0.1:<port up to ${MAX_DEV_PORT}> for imgflow to start its dev server there (its Web UI takes the port 1000 up); otherwise a server already running`,
      address,
    );
  }
  return port;
}

export interface EnsuredServer {
  connection: Connection;
  started: boolean;
  uiUrl?: string;
}

/**
 * Reuses the server at `config.address`, or, when that is a loopback address with nothing on it,
 * starts the dev server there with its data under imgflow's home.
 */
export async function ensureServer(config: Config, say: (line: string) => void = () => {}): Promise<EnsuredServer> {
  const dir = paths(config).server;
  const m = LOOPBACK.exec(config.address);
  const uiFile = path.join(dir, 'ui-url');
  const settings = connectionSettings(config);
  let connection = await connectWithin(settings, 1500);
  let started = false;
  if (!connection) {
    if (!m) throw new Error(`cannot reach Temporal at ${config.address}: is the server up, and the address right?`);
    const port = devServerPort(config.address);
    const server = spawnDevServer({
      cli: ensureTemporalCli(say),
      port,
      uiPort: port + 1000,
      dbFile: path.join(dir, 'dev.sqlite'),
      logFile: path.join(dir, 'server.log'),
      namespace: config.namespace,
    });
    fs.writeFileSync(path.join(dir, 'server.pid'), `${server.pid}\n`);
    fs.writeFileSync(uiFile, `${server.uiUrl}\n`);
    say(`started the Temporal dev server (pid ${server.pid}), data in ${dir}`);
    connection = await connectWithin(settings, 60_000);
    if (!connection) {
      // A server that never answered is not left running for the next attempt to trip over.
      stopServer(config);
      throw new Error(
        `the Temporal dev server did not come up on ${config.address}; see ${path.join(dir, 'server.log')}`,
      );
    }
    started = true;
  }
  await waitForNamespace(connection, config.namespace, started ? 30_000 : 3000);
  await ensureSearchAttributes(connection, config.namespace);
  const uiUrl = m && fs.existsSync(uiFile) ? fs.readFileSync(uiFile, 'utf8').trim() : undefined;
  return { connection, started, ...(uiUrl ? { uiUrl } : {}) };
}

/** Stops a dev server this machine started, by its pid file. */
export function stopServer(config: Config): boolean {
  const pidFile = path.join(paths(config).server, 'server.pid');
  if (!fs.existsSync(pidFile)) return false;
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  fs.rmSync(pidFile);
  try {
    process.kill(-pid, 'SIGTERM');
    return true;
  } catch {
    return false;
  }
}
