/**
 * Where imgflow keeps its state and how it reaches Temporal. Every setting has an embedded default
 * (no root, no kernel features) and an IMGFLOW_* environment variable; CLI flags override both.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { homeModes, type FileModes } from './modes.js';
import { archFromNode } from '../common/arch.js';
import { checkHost, checkInt, InputError } from '../common/names.js';

export interface Config {
  /** Temporal frontend, host:port. */
  address: string;
  namespace: string;
  /** Root of imgflow's own files: image store, NAS pools, caches, the dev server's data. */
  home: string;
  /** This machine's name on task queues. */
  host: string;
  /** The cloud site this machine serves. */
  site: string;
  /** host:port for the Prometheus endpoint of a worker process; empty to disable. */
  metricsAddress: string;
  /** The payload keyring file (see lib/keyring.ts); made on first use. */
  codecKeys: string;
  /** How to reach the frontend securely; `enabled: false` is the plain dev server. */
  tls: TlsSettings;
  /** A file holding the bearer token sent with every call (read when connecting, never logged). */
  apiKeyFile?: string;
  /** The token itself, when given in the environment or on the command line instead of a file. */
  apiKey?: string;
  /** How long a client keeps trying to connect (with backoff) before it gives up, in ms. */
  connectTimeoutMs: number;
  /** How long a command that reads from a workflow waits for an orchestrator to answer, in ms. */
  answerTimeoutMs: number;
}

/** Client TLS, named as the Temporal CLI names it (`--tls-cert-path`, `TEMPORAL_TLS_CLIENT_CERT_PATH`, ...). */
export interface TlsSettings {
  enabled: boolean;
  /** This client's certificate and key (mutual TLS). */
  certPath?: string;
  keyPath?: string;
  /** The CA that signed the server's certificate; the system's trust store when unset. */
  caPath?: string;
  /** The name to check in the server's certificate when it differs from the address's host. */
  serverName?: string;
}

export function shortHostName(): string {
  return os.hostname().split('.')[0]!.toLowerCase();
}

/** Node's `process.arch` in the kernel's words, as task queues and package managers use them. */
export function machineArch(): string {
  return archFromNode(process.arch);
}

function defaultHome(): string {
  const data = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'imgflow');
}

export function loadConfig(overrides: Partial<Config> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  // An empty setting would silently mean the default (or the working directory): it is refused.
  // Only an empty metrics address means something: no metrics endpoint.
  for (const [field, value] of Object.entries(overrides))
    if (value === '' && field !== 'metricsAddress') throw new InputError(field, 'a value, not an empty string', value);
  const host = overrides.host ?? env.IMGFLOW_HOST ?? shortHostName();
  const config: Config = {
    address: overrides.address ?? env[CONNECTION_ENV.address] ?? '127.0.0.1:7233',
    namespace: overrides.namespace ?? env[CONNECTION_ENV.namespace] ?? 'imgflow',
    home: path.resolve(overrides.home ?? env.IMGFLOW_HOME ?? defaultHome()),
    host,
    site: overrides.site ?? env.IMGFLOW_SITE ?? host,
    metricsAddress: overrides.metricsAddress ?? env.IMGFLOW_METRICS ?? '127.0.0.1:9464',
    codecKeys: '',
    tls: overrides.tls ?? tlsFromEnv(env),
    ...optional('apiKeyFile', overrides.apiKeyFile ?? env[CONNECTION_ENV.apiKeyFile]),
    ...optional('apiKey', overrides.apiKey ?? env[CONNECTION_ENV.apiKey]),
    connectTimeoutMs:
      overrides.connectTimeoutMs ??
      seconds('IMGFLOW_CONNECT_TIMEOUT', env.IMGFLOW_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT_S),
    answerTimeoutMs:
      overrides.answerTimeoutMs ??
      seconds('IMGFLOW_ANSWER_TIMEOUT', env.IMGFLOW_ANSWER_TIMEOUT, DEFAULT_ANSWER_TIMEOUT_S),
  };
  config.codecKeys = path.resolve(overrides.codecKeys ?? env.IMGFLOW_CODEC_KEYS ?? paths(config).codecKeys);
  checkHost('host', config.host);
  checkHost('site', config.site);
  checkAddress(config.address);
  checkNamespace(config.namespace);
  if (config.metricsAddress)
    checkMetricsAddress(
      overrides.metricsAddress !== undefined ? '--metrics' : 'IMGFLOW_METRICS',
      config.metricsAddress,
    );
  return config;
}

export const DEFAULT_CONNECT_TIMEOUT_S = 30;
export const DEFAULT_ANSWER_TIMEOUT_S = 10;
/** The most a bound in seconds may be: an hour. */
const MAX_BOUND_S = 3600;

/** A bound in whole seconds (a flag or its IMGFLOW_* variable), in ms. */
export function seconds(field: string, value: string | undefined, fallback: number): number {
  return checkInt(field, value ?? fallback, 1, MAX_BOUND_S) * 1000;
}

/** A client's connection settings in the environment: the Temporal CLI's names, and imgflow's for a token file. */
export const CONNECTION_ENV = {
  address: 'TEMPORAL_ADDRESS',
  namespace: 'TEMPORAL_NAMESPACE',
  tls: 'TEMPORAL_TLS',
  certPath: 'TEMPORAL_TLS_CLIENT_CERT_PATH',
  keyPath: 'TEMPORAL_TLS_CLIENT_KEY_PATH',
  caPath: 'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
  serverName: 'TEMPORAL_TLS_SERVER_NAME',
  apiKey: 'TEMPORAL_API_KEY',
  apiKeyFile: 'IMGFLOW_API_KEY_FILE',
} as const;

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value ? { [key]: value } : {}) as { [P in K]?: string };
}

/** The Temporal CLI's TLS variables; TLS is on when any is set (`TEMPORAL_TLS=false` turns it off). */
export function tlsFromEnv(env: NodeJS.ProcessEnv): TlsSettings {
  const files = {
    ...optional('certPath', env[CONNECTION_ENV.certPath]),
    ...optional('keyPath', env[CONNECTION_ENV.keyPath]),
    ...optional('caPath', env[CONNECTION_ENV.caPath]),
    ...optional('serverName', env[CONNECTION_ENV.serverName]),
  };
  const flag = env[CONNECTION_ENV.tls]?.toLowerCase();
  const enabled = flag === undefined || flag === '' ? Object.keys(files).length > 0 : flag === 'true' || flag === '1';
  return { enabled, ...files };
}

/** A Temporal namespace name, as the server accepts it. */
export function checkNamespace(namespace: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(namespace))
    throw new InputError('namespace', 'a namespace of letters, digits, ".", "_" or "-"', namespace);
  return namespace;
}

/** host:port with a sane host and a port in range; checked before anything dials it. */
export function checkAddress(address: string): string {
  const m = /^([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(address);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new InputError('address', 'host:port', address);
  }
  return address;
}

/**
 * The Prometheus endpoint's address: the native runtime binds it as a socket address, so an IP
 * (IPv4, or IPv6 in brackets) and a port; a host name would fail only once the worker starts.
 */
export function checkMetricsAddress(field: string, address: string): string {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(address);
  const octetsOk = !m || m[1]!.startsWith('[') || m[1]!.split('.').every((o) => Number(o) <= 255);
  if (!m || !octetsOk || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new InputError(
      field,
      'ip:port for the metrics endpoint (an IPv4 address or [IPv6], and a port from 1 to 65535), or empty to turn it off',
      address,
    );
  }
  return address;
}

/** Layout of the state directory. */
export const paths = (config: Pick<Config, 'home'>) => ({
  store: path.join(config.home, 'store'),
  nas: (host: string) => path.join(config.home, 'nas', host),
  compute: (host: string) => path.join(config.home, 'compute', host),
  builder: (arch: string) => path.join(config.home, 'builder', arch),
  server: path.join(config.home, 'temporal'),
  /** A Temporal cluster `imgflow cluster up` made: its state, certificates, keys and logs. */
  cluster: (name: string) => path.join(config.home, 'clusters', name),
  /** The built-in cloud image catalog that subscriptions register into by default. */
  catalog: path.join(config.home, 'catalog'),
  /** On the control host: the history entries lineages archived, one JSON-lines file per lineage. */
  lineageHistory: path.join(config.home, 'catalog', 'lineages'),
  /** Process groups of commands that workers on this host are running. */
  commands: path.join(config.home, 'run', 'commands'),
  /** The payload keyring (0600, in a 0700 directory). */
  codecKeys: path.join(config.home, 'keys', 'codec.json'),
});

/**
 * Makes the state directory readable by its owner only: it holds volumes, catalog disks, the dev
 * server's database and keys. A site that serves part of it to others (a boot server reading
 * packs) says so with IMGFLOW_HOME_MODE (octal, e.g. 0750).
 */
export function ensurePrivateHome(config: Pick<Config, 'home'>, env: NodeJS.ProcessEnv = process.env): void {
  const mode = homeModes(env).dir;
  fs.mkdirSync(config.home, { recursive: true, mode });
  if ((fs.statSync(config.home).mode & 0o777) !== mode) fs.chmodSync(config.home, mode);
}

/*
 * What a worker's activities take from its environment, one reader per role. The worker reads its
 * role's settings once when it starts (workers/roles.ts) and hands them to the activity factories:
 * nothing under activities/ reads the environment. Each field names its variable. A value is
 * checked here when it needs nothing but itself; one that a driver's rules check (a ZFS dataset, an
 * iSCSI name, a stream address) is checked by the factory or activity that uses it, as before.
 * Called without an environment they read this process's; `{}` gives the embedded defaults.
 */

/** The builder's: how its commands that fetch packages reach the mirror. */
export interface BuilderSettings {
  /** IMGFLOW_MIRROR_PROXY: an http://HOST:PORT proxy for debootstrap and apt only (a builder with no route out). */
  mirrorProxy?: string;
}

export function builderSettings(env: NodeJS.ProcessEnv = process.env): BuilderSettings {
  const proxy = env.IMGFLOW_MIRROR_PROXY;
  if (proxy === undefined || proxy === '') return {};
  if (!/^http:\/\/[A-Za-z0-9.-]+:\d{1,5}\/?$/.test(proxy))
    throw new InputError('IMGFLOW_MIRROR_PROXY', 'an http://HOST:PORT proxy URL', proxy);
  return { mirrorProxy: proxy };
}

/** How a NAS offers its volumes to compute hosts (IMGFLOW_NAS_EXPORT and the settings of each kind). */
export type NasExportSettings =
  | { kind: 'none' }
  /** IMGFLOW_NAS_PORTAL (127.0.0.1 unless set), IMGFLOW_TGT_CONTROL_PORT (a host's own tgtd, one per network namespace). */
  | { kind: 'tgt'; portal: string; controlPort?: number }
  /** IMGFLOW_NAS_NBD_ADDRESS. */
  | { kind: 'nbd'; address?: string };

export interface NasSettings {
  /** IMGFLOW_HOME_MODE: who may read the stored versions, volumes and packs. */
  modes: FileModes;
  /** IMGFLOW_STREAM_ADDRESS: this host's IPv4 address for streams from other hosts; unset, they come over rsync or ssh. */
  streamAddress?: string;
  /** IMGFLOW_SYNC_LOCAL=1: other hosts' stores are reached here, without ssh (tests, one-host sites). */
  syncLocal: boolean;
  /** IMGFLOW_NAS_POOL: the ZFS dataset volumes are stored under; qcow2 files under `<home>/nas/<host>` when unset. */
  pool?: string;
  export: NasExportSettings;
  /** IMGFLOW_NAS_SYNC_LIMIT: pulls this NAS runs at once (2 unless set). */
  syncLimit: number;
}

function nasExportSettings(env: NodeJS.ProcessEnv): NasExportSettings {
  const kind = env.IMGFLOW_NAS_EXPORT ?? 'none';
  switch (kind) {
    case 'tgt':
      return {
        kind,
        portal: env.IMGFLOW_NAS_PORTAL ?? '127.0.0.1',
        ...(env.IMGFLOW_TGT_CONTROL_PORT
          ? { controlPort: checkInt('IMGFLOW_TGT_CONTROL_PORT', env.IMGFLOW_TGT_CONTROL_PORT, 0, 65_535) }
          : {}),
      };
    case 'nbd':
      return { kind, ...(env.IMGFLOW_NAS_NBD_ADDRESS ? { address: env.IMGFLOW_NAS_NBD_ADDRESS } : {}) };
    case 'none':
      return { kind };
    default:
      throw new InputError('IMGFLOW_NAS_EXPORT', 'one of none, tgt, nbd', kind);
  }
}

/** Kept even when empty: the factory refuses an empty address rather than take it as unset. */
function streamAddress(env: NodeJS.ProcessEnv): { streamAddress?: string } {
  return env.IMGFLOW_STREAM_ADDRESS !== undefined ? { streamAddress: env.IMGFLOW_STREAM_ADDRESS } : {};
}

export function nasSettings(env: NodeJS.ProcessEnv = process.env): NasSettings {
  return {
    modes: homeModes(env),
    ...streamAddress(env),
    syncLocal: env.IMGFLOW_SYNC_LOCAL === '1',
    ...optional('pool', env.IMGFLOW_NAS_POOL),
    export: nasExportSettings(env),
    syncLimit: checkInt('IMGFLOW_NAS_SYNC_LIMIT', env.IMGFLOW_NAS_SYNC_LIMIT ?? 2, 1, 100),
  };
}

export interface ComputeSettings {
  /** IMGFLOW_COMPUTE_INITIATOR: the iSCSI initiator name this host logs in with; `<prefix>:<host>` when unset. */
  initiator?: string;
  /** IMGFLOW_COMPUTE_ATTACH=iscsi-kernel: iSCSI volumes attach as kernel block devices, not as URLs qemu opens. */
  kernelIscsi: boolean;
  /** IMGFLOW_COMPUTE_POOL: the ZFS dataset a sync volume's local copy lives under; without it the host takes no sync volumes. */
  pool?: string;
  /** IMGFLOW_STREAM_ADDRESS, as for a NAS. */
  streamAddress?: string;
  /** IMGFLOW_SYNC_LOCAL=1, as for a NAS. */
  syncLocal: boolean;
}

export function computeSettings(env: NodeJS.ProcessEnv = process.env): ComputeSettings {
  return {
    ...(env.IMGFLOW_COMPUTE_INITIATOR !== undefined ? { initiator: env.IMGFLOW_COMPUTE_INITIATOR } : {}),
    kernelIscsi: env.IMGFLOW_COMPUTE_ATTACH === 'iscsi-kernel',
    ...optional('pool', env.IMGFLOW_COMPUTE_POOL),
    ...streamAddress(env),
    syncLocal: env.IMGFLOW_SYNC_LOCAL === '1',
  };
}

/** The cloud registry subscriptions register into: the built-in catalog, or an OpenNebula front-end. */
export interface RegistrySettings {
  /** IMGFLOW_CLOUD_FORMAT: the disk format images are registered in; the registry's own, qcow2, when absent. */
  format?: 'qcow2' | 'raw';
  /** IMGFLOW_ONE_ENDPOINT, IMGFLOW_ONE_USER (oneadmin), IMGFLOW_ONE_PASSWORD_FILE, IMGFLOW_ONE_DATASTORE (1). */
  opennebula?: { endpoint: string; user: string; passwordFile: string; datastoreId: number };
}

export interface CloudSettings {
  registry: RegistrySettings;
  /** IMGFLOW_CA_DIR: the hashed CA directory image-list signers are checked against. */
  caDir: string;
}

/** Where grid sites keep their hashed CA directory. */
export const DEFAULT_CA_DIR = '/etc/grid-security/certificates';

export function registrySettings(env: NodeJS.ProcessEnv = process.env): RegistrySettings {
  const format = env.IMGFLOW_CLOUD_FORMAT || 'qcow2';
  if (format !== 'qcow2' && format !== 'raw')
    throw new InputError('IMGFLOW_CLOUD_FORMAT', 'qcow2 or raw', env.IMGFLOW_CLOUD_FORMAT);
  if (!env.IMGFLOW_ONE_ENDPOINT) return { format };
  // The password itself is read from its file by the registry, at worker start, and lives only there.
  const passwordFile = env.IMGFLOW_ONE_PASSWORD_FILE;
  if (!passwordFile)
    throw new InputError(
      'IMGFLOW_ONE_PASSWORD_FILE',
      'a file holding the OpenNebula password when IMGFLOW_ONE_ENDPOINT is set',
      undefined,
    );
  return {
    format,
    opennebula: {
      endpoint: env.IMGFLOW_ONE_ENDPOINT,
      user: env.IMGFLOW_ONE_USER || 'oneadmin',
      passwordFile,
      datastoreId: checkInt('IMGFLOW_ONE_DATASTORE', env.IMGFLOW_ONE_DATASTORE ?? '1', 0, 1_000_000),
    },
  };
}

export function cloudSettings(env: NodeJS.ProcessEnv = process.env): CloudSettings {
  return { registry: registrySettings(env), caDir: env.IMGFLOW_CA_DIR || DEFAULT_CA_DIR };
}

/** How the control host sends notification e-mail. */
export interface NotifySettings {
  /** IMGFLOW_SMTP: `host:port` of the mail server (STARTTLS when it offers it); e-mail targets fail without it. */
  smtp?: { host: string; port: number };
  /** IMGFLOW_SMTP_USER and IMGFLOW_SMTP_PASSWORD_FILE: the login, when the server wants one (the password stays in its file). */
  auth?: { user: string; passwordFile: string };
  /** IMGFLOW_MAIL_FROM: the sender; `imgflow@<host>` when unset. */
  from: string;
}

export function notifySettings(env: NodeJS.ProcessEnv = process.env): NotifySettings {
  const smtp = env.IMGFLOW_SMTP ? smtpAddress(env.IMGFLOW_SMTP) : undefined;
  const user = env.IMGFLOW_SMTP_USER;
  if (user && !env.IMGFLOW_SMTP_PASSWORD_FILE)
    throw new InputError(
      'IMGFLOW_SMTP_PASSWORD_FILE',
      'a file holding the SMTP password when IMGFLOW_SMTP_USER is set',
      undefined,
    );
  return {
    ...(smtp ? { smtp } : {}),
    ...(user ? { auth: { user, passwordFile: env.IMGFLOW_SMTP_PASSWORD_FILE! } } : {}),
    from: env.IMGFLOW_MAIL_FROM || `imgflow@${shortHostName()}`,
  };
}

function smtpAddress(value: string): { host: string; port: number } {
  const m = /^([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})$/.exec(value);
  if (!m) throw new InputError('IMGFLOW_SMTP', 'host:port of an SMTP server', value);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: checkInt('IMGFLOW_SMTP', m[2], 1, 65535) };
}
