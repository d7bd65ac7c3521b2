/**
 * What every command shares: the global flags turned into a checked Config, a Temporal client on
 * imgflow's namespace, and the in-process workers that `dev` and `demo` run.
 */
import os from 'node:os';
import { Client, type Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { checkUser } from '../common/lineage.js';
import { imgflowDataConverter } from '../lib/codec.js';
import { DEFAULT_ANSWER_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S, ensurePrivateHome, loadConfig, machineArch, seconds, tlsFromEnv, type Config, type TlsSettings } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { createLogger, type Logger } from '../lib/logger.js';
import type { Role } from '../common/queues.js';
import { installRuntime } from '../workers/runtime.js';
import { createWorker } from '../workers/worker.js';
import { setAnswerBound } from './answers.js';
import { connectOrFail, ensureServer } from './temporal-server.js';

export interface GlobalFlags {
  address?: string;
  namespace?: string;
  home?: string;
  codecKeys?: string;
  json?: boolean;
  tls?: boolean;
  tlsCertPath?: string;
  tlsKeyPath?: string;
  tlsCaPath?: string;
  tlsServerName?: string;
  apiKey?: string;
  apiKeyFile?: string;
  connectTimeout?: string;
  answerTimeout?: string;
}

/** The TLS flags over the environment's TEMPORAL_TLS_* settings; any file given turns TLS on. */
function tlsFrom(flags: GlobalFlags): TlsSettings {
  const env = tlsFromEnv(process.env);
  const files = {
    ...(flags.tlsCertPath ? { certPath: flags.tlsCertPath } : {}),
    ...(flags.tlsKeyPath ? { keyPath: flags.tlsKeyPath } : {}),
    ...(flags.tlsCaPath ? { caPath: flags.tlsCaPath } : {}),
    ...(flags.tlsServerName ? { serverName: flags.tlsServerName } : {}),
  };
  const enabled = flags.tls ?? (Object.keys(files).length > 0 || env.enabled);
  return { ...env, ...files, enabled };
}

/** The checked configuration of a command, its state directory made private on the way. */
export function configFrom(flags: GlobalFlags, extra: Partial<Config> = {}): Config {
  // A flag given empty is checked like any other value, never taken as absent.
  const given = <K extends string>(key: K, value: string | undefined) => (value === undefined ? {} : ({ [key]: value } as Record<K, string>));
  const config = loadConfig({
    ...given('address', flags.address),
    ...given('namespace', flags.namespace),
    ...given('home', flags.home),
    ...given('codecKeys', flags.codecKeys),
    tls: tlsFrom(flags),
    ...given('apiKey', flags.apiKey),
    ...given('apiKeyFile', flags.apiKeyFile),
    ...(flags.connectTimeout !== undefined ? { connectTimeoutMs: seconds('--connect-timeout', flags.connectTimeout, DEFAULT_CONNECT_TIMEOUT_S) } : {}),
    ...(flags.answerTimeout !== undefined ? { answerTimeoutMs: seconds('--answer-timeout', flags.answerTimeout, DEFAULT_ANSWER_TIMEOUT_S) } : {}),
    ...extra,
  });
  ensurePrivateHome(config);
  return config;
}

/** The person (or system) behind a request: IMGFLOW_USER, else the login name. */
export function currentUser(): string {
  return checkUser('user', process.env.IMGFLOW_USER ?? os.userInfo().username);
}

/** Progress notes for people, on stderr so that stdout stays the result (and valid JSON). */
export function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

export async function connectClient(config: Config): Promise<{ client: Client; connection: Connection }> {
  const connection = await connectOrFail(connectionSettings(config), config.connectTimeoutMs, "start it with 'imgflow dev' or set --address and the TLS and token settings");
  return { connection, client: newClient(connection, config) };
}

/**
 * The client's identity names the person: Temporal records it with every update, signal and start,
 * so the Web UI's history shows who asked for each change.
 */
function newClient(connection: Connection, config: Config): Client {
  const client = new Client({ connection, namespace: config.namespace, dataConverter: imgflowDataConverter(config), identity: `${currentUser()}@${os.hostname()} (imgflow ${process.pid})` });
  setAnswerBound(client, config.answerTimeoutMs);
  return client;
}

/** Starts the dev server when it is not up yet (loopback only) and connects a client to it. */
export async function ensureClient(config: Config): Promise<{ client: Client; connection: Connection; uiUrl?: string }> {
  const server = await ensureServer(config, say);
  return { connection: server.connection, client: newClient(server.connection, config), ...(server.uiUrl ? { uiUrl: server.uiUrl } : {}) };
}

export interface LocalWorkers {
  workers: Worker[];
  /** Drains and stops every worker, then closes their connection. */
  stop(): Promise<void>;
}

/** Runs one worker per role in this process, sharing one connection and one workflow bundle. */
export async function startLocalWorkers(config: Config, roles: readonly Role[], logger: Logger = createLogger('imgflow')): Promise<LocalWorkers> {
  installRuntime(logger, process.env.IMGFLOW_METRICS ?? '');
  const connection = await NativeConnection.connect(connectionSettings(config));
  const arch = machineArch();
  const workers = await Promise.all(roles.map(async (role) => (await createWorker({ role, config, arch, connection, logger })).worker));
  const running = workers.map((w) => w.run());
  return {
    workers,
    async stop() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(running);
      await connection.close();
    },
  };
}
