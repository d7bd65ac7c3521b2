/**
 * The CLI's Temporal client: one connection per command, on imgflow's namespace, with its data
 * converter (the payload keyring), the person's identity and the command's answer bound.
 * `withClient` connects (or starts the dev server first), runs the work and closes, whatever
 * happens; every command, the demo and the bridges get their client here.
 */
import os from 'node:os';
import type { Client, Connection } from '@temporalio/client';
import { imgflowDataConverter } from '../lib/codec.js';
import type { Config } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { setAnswerBound } from './answers.js';
import { sdk } from './sdk.js';
import { currentUser, say } from './context.js';
import { connectOrFail, ensureServer } from './temporal-server.js';

export interface Session {
  client: Client;
  connection: Connection;
  config: Config;
  /** The dev server's Web UI, when imgflow manages the server (startServer only). */
  uiUrl?: string;
}

export async function connectClient(config: Config): Promise<{ client: Client; connection: Connection }> {
  const connection = await connectOrFail(
    connectionSettings(config),
    config.connectTimeoutMs,
    "start it with 'imgflow dev' or set --address and the TLS and token settings",
  );
  return { connection, client: newClient(connection, config) };
}

/**
 * The client's identity names the person: Temporal records it with every update, signal and start,
 * so the Web UI's history shows who asked for each change.
 */
function newClient(connection: Connection, config: Config): Client {
  const client = new sdk.Client({
    connection,
    namespace: config.namespace,
    dataConverter: imgflowDataConverter(config),
    identity: `${currentUser()}@${os.hostname()} (imgflow ${process.pid})`,
  });
  setAnswerBound(client, config.answerTimeoutMs);
  return client;
}

/** Starts the dev server when it is not up yet (loopback only) and connects a client to it. */
export async function ensureClient(
  config: Config,
): Promise<{ client: Client; connection: Connection; uiUrl?: string }> {
  const server = await ensureServer(config, say);
  return {
    connection: server.connection,
    client: newClient(server.connection, config),
    ...(server.uiUrl ? { uiUrl: server.uiUrl } : {}),
  };
}

/**
 * Connects to the server at `config.address` (with `startServer`, starting the dev server there
 * first when nothing answers), runs `work` and closes the connection after, whatever happened.
 */
export async function withClient<T>(
  config: Config,
  work: (session: Session) => Promise<T>,
  options: { startServer?: boolean } = {},
): Promise<T> {
  const connected = options.startServer ? await ensureClient(config) : await connectClient(config);
  try {
    return await work({ ...connected, config });
  } finally {
    await connected.connection.close();
  }
}
