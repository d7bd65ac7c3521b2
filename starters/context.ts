/**
 * What every command shares: the global flags turned into a checked Config, who is asking, and
 * progress notes. No Temporal SDK here: commands load theirs (client.ts) when they run.
 */
import os from 'node:os';
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import type { withClient } from './client.js';
import { checkUser } from '../common/lineage.js';
import {
  DEFAULT_ANSWER_TIMEOUT_S,
  DEFAULT_CONNECT_TIMEOUT_S,
  ensurePrivateHome,
  loadConfig,
  seconds,
  tlsFromEnv,
  type Config,
  type TlsSettings,
} from '../lib/config.js';

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
  const given = <K extends string>(key: K, value: string | undefined) =>
    value === undefined ? {} : ({ [key]: value } as Record<K, string>);
  const config = loadConfig({
    ...given('address', flags.address),
    ...given('namespace', flags.namespace),
    ...given('home', flags.home),
    ...given('codecKeys', flags.codecKeys),
    tls: tlsFrom(flags),
    ...given('apiKey', flags.apiKey),
    ...given('apiKeyFile', flags.apiKeyFile),
    ...(flags.connectTimeout !== undefined
      ? { connectTimeoutMs: seconds('--connect-timeout', flags.connectTimeout, DEFAULT_CONNECT_TIMEOUT_S) }
      : {}),
    ...(flags.answerTimeout !== undefined
      ? { answerTimeoutMs: seconds('--answer-timeout', flags.answerTimeout, DEFAULT_ANSWER_TIMEOUT_S) }
      : {}),
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

/**
 * A command's work against the server: loads what it needs (`load`: client.ts and the entity's
 * client, so the Temporal SDK only when the command runs), connects through withClient on the
 * command's flags, and closes after.
 */
export async function connected<L extends { withClient: typeof withClient }, T>(
  cmd: Command,
  load: () => Promise<L>,
  work: (s: { c: L; client: Client; config: Config; flags: GlobalFlags; uiUrl?: string }) => Promise<T>,
  options: { startServer?: boolean } = {},
): Promise<T> {
  const flags = cmd.optsWithGlobals<GlobalFlags>();
  const config = configFrom(flags);
  const c = await load();
  return c.withClient(config, (session) => work({ ...session, c, flags }), options);
}
