/**
 * A Temporal cluster for production on this machine: `up` builds what is missing, makes the
 * certificates and the token key, creates and migrates the databases, writes the configuration,
 * starts every service as its own process and registers imgflow's namespace and search attributes.
 * `up` again on a running cluster starts only what is down. `down` stops every process it started.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import type { TlsSettings } from '../../lib/config.js';
import { connectionSettings } from '../../lib/connection.js';
import { connectOrFail, ensureSearchAttributes, waitForNamespace } from '../temporal-server.js';
import { ensureServerBinaries, findServerBinaries, type ServerBinaries } from './build.js';
import { databasesOf, DEFAULT_POSTGRES_URL, dropDatabases, migrateDatabases, parsePostgresUrl } from './database.js';
import { ensurePki, FRONTEND_TLS_NAME, issueClientCert, type CertPair, type SiteCertificates } from './pki.js';
import { writeServerConfig, writeUiConfig } from './server-config.js';
import {
  listening,
  pidOf,
  startKeysServer,
  startService,
  startUi,
  startUiFront,
  stopProcess,
  waitListening,
} from './services.js';
import {
  checkClusterName,
  freePorts,
  readState,
  stateFile,
  TEMPORAL_SERVICES,
  tokenFile,
  writeState,
  type ClusterState,
  type TemporalService,
} from './state.js';
import { ensureSigningKey, mintToken, writeTokenFile, type TokenRole } from './tokens.js';

export interface UpOptions {
  name: string;
  /** The cluster's state directory (certificates, keys, configuration, logs, pid files). */
  dir: string;
  namespace: string;
  postgresUrl?: string;
  /** The address the frontend listens on; its certificate names it. Default 127.0.0.1. */
  listen?: string;
  /** More names or addresses for the frontend's certificate (a bridge address, a DNS name). */
  sans?: string[];
  /** A site's own CA and frontend certificate, instead of the ones imgflow makes. */
  site?: SiteCertificates;
  say?: (line: string) => void;
}

/** Order of start: the frontend finds history and matching through membership. */
const START_ORDER: TemporalService[] = ['history', 'matching', 'frontend', 'internal-frontend', 'worker'];
const STARTUP_SECONDS = 120;
const OPERATOR = 'operator';

function postgresUrlFile(dir: string): string {
  return path.join(dir, 'secrets', 'postgres-url');
}

async function choosePorts(listen: string): Promise<ClusterState['ports']> {
  const [frontendGrpc] = await freePorts(1, listen);
  const local = await freePorts(2 * TEMPORAL_SERVICES.length + 2);
  const ports = Object.fromEntries(
    TEMPORAL_SERVICES.map((s, i) => [
      s,
      { grpc: i === 0 ? frontendGrpc! : local[2 * i]!, membership: local[2 * i + 1]! },
    ]),
  );
  // local[0] would have been the frontend's: it serves the key set instead.
  return {
    ...(ports as Record<TemporalService, { grpc: number; membership: number }>),
    keys: local[0]!,
    ui: local.at(-2)!,
    uiServer: local.at(-1)!,
  };
}

/** Connection settings of a client of this cluster: its certificate and a token file. */
export function clientTls(state: ClusterState, client: CertPair): TlsSettings {
  return {
    enabled: true,
    certPath: client.cert,
    keyPath: client.key,
    caPath: state.pki.caCert,
    serverName: FRONTEND_TLS_NAME,
  };
}

export function frontendAddress(state: ClusterState): string {
  return `${state.listen}:${state.ports.frontend.grpc}`;
}

/** A token minted into a private file under the state directory; returns its path. */
export function tokenFor(
  state: ClusterState,
  role: TokenRole,
  subject: string,
  ttlSeconds: number,
  name: string = role,
): string {
  const file = tokenFile(state, name);
  writeTokenFile(file, mintToken(state.signingKey, { role, namespace: state.namespace, subject, ttlSeconds }));
  return file;
}

/** A short-lived client connection of this machine's operator, with a token of `role` (admin: namespace and search attribute registration). */
export async function clusterConnection(
  state: ClusterState,
  timeoutMs: number,
  role: TokenRole = 'admin',
): Promise<Connection> {
  const client = issueClientCert(state.pki, OPERATOR);
  const apiKey = mintToken(state.signingKey, {
    role,
    namespace: state.namespace,
    subject: `imgflow-cluster-${role}`,
    ttlSeconds: 600,
  });
  return connectOrFail(
    connectionSettings({ address: frontendAddress(state), tls: clientTls(state, client), apiKey }),
    timeoutMs,
    `see the logs in ${path.join(state.dir, 'log')}`,
  );
}

async function ensureNamespace(connection: Connection, namespace: string): Promise<void> {
  const exists = await connection.workflowService.describeNamespace({ namespace }).then(
    () => true,
    () => false,
  );
  if (!exists) {
    await connection.workflowService
      .registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('7 days') })
      .catch((err: Error) => {
        if (!/already exists/i.test(err.message)) throw err;
      });
  }
  await waitForNamespace(connection, namespace, 60_000);
}

export interface UpResult {
  state: ClusterState;
  /** Processes started by this call (the others were up already). */
  started: string[];
  operator: { tls: TlsSettings; apiKeyFile: string; address: string };
  uiUrl?: string;
}

export async function clusterUp(o: UpOptions): Promise<UpResult> {
  const say = o.say ?? (() => {});
  checkClusterName(o.name);
  const pgUrl =
    o.postgresUrl ??
    (fs.existsSync(postgresUrlFile(o.dir))
      ? fs.readFileSync(postgresUrlFile(o.dir), 'utf8').trim()
      : DEFAULT_POSTGRES_URL);
  const pg = parsePostgresUrl(pgUrl);
  const bins = ensureServerBinaries(say);
  const previous = fs.existsSync(stateFile(o.dir)) ? readState(o.dir) : undefined;
  const listen = o.listen ?? previous?.listen ?? '127.0.0.1';
  const state: ClusterState = {
    name: o.name,
    namespace: o.namespace,
    dir: o.dir,
    listen,
    postgres: { host: pg.host, port: pg.port, user: pg.user },
    databases: databasesOf(o.name),
    ports: previous?.ports ?? (await choosePorts(listen)),
    pki: ensurePki(path.join(o.dir, 'pki'), { sans: [listen, ...(o.sans ?? [])], ...(o.site ? { site: o.site } : {}) }),
    signingKey: ensureSigningKey(path.join(o.dir, 'keys')),
    ui: Boolean(bins.ui),
  };
  fs.mkdirSync(path.dirname(postgresUrlFile(o.dir)), { recursive: true, mode: 0o700 });
  fs.writeFileSync(postgresUrlFile(o.dir), `${pgUrl}\n`, { mode: 0o600 });
  // Recorded before the databases are made, so that `down --drop-databases` finds them even when a migration fails.
  writeState(state);
  say(
    `databases ${state.databases.temporal} and ${state.databases.visibility} on ${pg.host}:${pg.port}: creating and migrating`,
  );
  migrateDatabases(bins.sql, pg, state.databases);
  writeServerConfig(state, pg);

  // A frontend still listening on an earlier address starts again on this one.
  if (previous && previous.listen !== listen) await stopProcess(state, 'frontend');
  const started: string[] = [];
  if (!pidOf(state, 'keys')) started.push('keys');
  startKeysServer(state);
  // The frontend reads the key set when it starts.
  await until(
    `the key set server on 127.0.0.1:${state.ports.keys}`,
    () => listening('127.0.0.1', state.ports.keys),
    30_000,
  );
  for (const service of START_ORDER) {
    if (!pidOf(state, service)) {
      say(`starting ${service}`);
      started.push(service);
    }
    startService(state, bins, service);
    await waitListening(state, service, STARTUP_SECONDS * 1000);
  }

  const connection = await clusterConnection(state, STARTUP_SECONDS * 1000);
  try {
    await ensureNamespace(connection, state.namespace);
    // The frontend's namespace cache learns of a new namespace a few seconds after it is described.
    await retryFor(30_000, () => ensureSearchAttributes(connection, state.namespace));
  } finally {
    await connection.close();
  }

  const operatorCert = issueClientCert(state.pki, OPERATOR);
  const apiKeyFile = tokenFor(state, 'operator', `${OPERATOR}@${state.name}`, 30 * 86_400);
  const uiUrl = startUiFor(state, bins, started);
  return {
    state,
    started,
    operator: { tls: clientTls(state, operatorCert), apiKeyFile, address: frontendAddress(state) },
    ...(uiUrl ? { uiUrl } : {}),
  };
}

/** The Web UI server with its own client certificate, behind a front door that adds a viewer's token. */
function startUiFor(state: ClusterState, bins: ServerBinaries, started: string[]): string | undefined {
  if (!bins.ui) return undefined;
  for (const name of ['ui', 'ui-front'] as const) if (!pidOf(state, name)) started.push(name);
  startUi(state, bins, writeUiConfig(state, issueClientCert(state.pki, 'web-ui')));
  startUiFront(state, tokenFor(state, 'viewer', `web-ui@${state.name}`, 30 * 86_400, 'web-ui'));
  return uiUrl(state);
}

/** The Web UI's front door, on this machine's loopback. */
export const uiUrl = (state: Pick<ClusterState, 'ports'>) => `http://127.0.0.1:${state.ports.ui}`;

/** Kills one Temporal service (SIGKILL by default, as a crash would) and starts it again. */
export async function restartService(
  dir: string,
  service: TemporalService,
  o: { signal?: NodeJS.Signals } = {},
): Promise<number> {
  const state = readState(dir);
  const bins = findServerBinaries();
  if (!bins) throw new Error('the Temporal server binaries are missing: run scripts/setup.sh');
  await stopProcess(state, service, o.signal ?? 'SIGKILL');
  const pid = startService(state, bins, service);
  await waitListening(state, service, STARTUP_SECONDS * 1000);
  return pid;
}

/** Stops every process the cluster started (the UI and frontend first); `dropDatabases` also removes its data and state. */
export async function clusterDown(dir: string, o: { dropDatabases?: boolean } = {}): Promise<string[]> {
  const state = readState(dir);
  const stopped: string[] = [];
  for (const name of [
    'ui-front',
    'ui',
    'frontend',
    'worker',
    'internal-frontend',
    'matching',
    'history',
    'keys',
  ] as const) {
    if (await stopProcess(state, name)) stopped.push(name);
  }
  if (o.dropDatabases) {
    const bins = findServerBinaries();
    if (!bins) throw new Error('the Temporal SQL tool is missing: run scripts/setup.sh');
    dropDatabases(bins.sql, parsePostgresUrl(fs.readFileSync(postgresUrlFile(dir), 'utf8').trim()), state.databases);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return stopped;
}

async function retryFor(timeoutMs: number, fn: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

async function until(what: string, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export { readState };
