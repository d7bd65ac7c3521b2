/**
 * What `imgflow cluster up` chose and made, recorded in the cluster's state directory so that
 * `status`, `restart`, `token` and `down` find it: names, ports, files. No secret is in it.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { checkHost, InputError } from '../../common/names.js';
import type { Databases } from './database.js';
import type { ClusterPki } from './pki.js';
import type { SigningKey } from './tokens.js';

/** The Temporal services, each its own process. The internal frontend serves only the system worker. */
export const TEMPORAL_SERVICES = ['frontend', 'internal-frontend', 'history', 'matching', 'worker'] as const;
export type TemporalService = (typeof TEMPORAL_SERVICES)[number];
/** The key set server, the Web UI server and its front door (which adds a viewer's token). */
export const HELPERS = ['keys', 'ui', 'ui-front'] as const;
export type ProcessName = TemporalService | (typeof HELPERS)[number];

export interface ServicePorts {
  grpc: number;
  membership: number;
}

export interface ClusterState {
  name: string;
  namespace: string;
  dir: string;
  /** The address the frontend listens on (its certificate names it). */
  listen: string;
  postgres: { host: string; port: number; user: string };
  databases: Databases;
  ports: Record<TemporalService, ServicePorts> & { keys: number; ui: number; uiServer: number };
  pki: ClusterPki;
  signingKey: SigningKey;
  /** Whether the UI server binary was there to start. */
  ui: boolean;
}

export const DEFAULT_CLUSTER = 'imgflow';
/** The most compute hosts a cluster's site may have (each a network namespace with its own address). */
export const MAX_COMPUTE = 64;

export function checkClusterName(name: string): string {
  return checkHost('--name', name);
}

export function stateFile(dir: string): string {
  return path.join(dir, 'cluster.json');
}

export function readState(dir: string): ClusterState {
  const file = stateFile(dir);
  if (!fs.existsSync(file)) throw new InputError('cluster', `a cluster made by 'imgflow cluster up' in ${dir}`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterState;
}

export function writeState(state: ClusterState): void {
  fs.mkdirSync(state.dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(stateFile(state.dir), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

/**
 * `n` different TCP ports nothing listens on now (held open together while chosen), below 32768:
 * Temporal records membership ports in a PostgreSQL smallint, and the kernel's ephemeral range is
 * above it, so these never collide with outgoing connections either.
 */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const held: net.Server[] = [];
  const tryListen = (port: number) =>
    new Promise<net.Server | undefined>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(undefined));
      server.listen(port, host, () => resolve(server));
    });
  for (let attempts = 0; held.length < n; attempts++) {
    if (attempts > 1000) throw new Error(`no ${n} free ports between 10000 and 32767 on ${host}`);
    const server = await tryListen(10_000 + Math.floor(Math.random() * 22_768));
    if (server) held.push(server);
  }
  const ports = held.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(held.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

export const runFile = (state: Pick<ClusterState, 'dir'>, name: ProcessName) =>
  path.join(state.dir, 'run', `${name}.pid`);
export const logFile = (state: Pick<ClusterState, 'dir'>, name: ProcessName) =>
  path.join(state.dir, 'log', `${name}.log`);
/** Tokens `up` minted for its own use and for this machine's operator. */
export const tokenFile = (state: Pick<ClusterState, 'dir'>, name: string) =>
  path.join(state.dir, 'tokens', `${name}.token`);
