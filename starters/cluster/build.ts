/**
 * The production Temporal binaries, built with Go from the module proxy once per machine into the
 * per-user cache (like the dev server's CLI): the server and its SQL schema tool at the server
 * version the pinned CLI embeds, and the Web UI server at the version that CLI embeds.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findOnPath } from '../../lib/which.js';

export const TEMPORAL_SERVER_VERSION = 'v1.29.1';
/** The UI server the Temporal CLI v1.5.1 embeds (UI 2.42.1). */
export const UI_SERVER_VERSION = 'v2.42.1';
const SERVER_MODULE = 'go.temporal.io/server';
const UI_MODULE = 'github.com/temporalio/ui-server/v2';

export interface ServerBinaries {
  server: string;
  sql: string;
  /** Absent when the UI server was not built. */
  ui?: string;
}

function cacheRoot(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'imgflow');
}

export function serverCacheDir(): string {
  return path.join(cacheRoot(), `temporal-server-${TEMPORAL_SERVER_VERSION}`);
}

export function uiCacheDir(): string {
  return path.join(cacheRoot(), `temporal-ui-server-${UI_SERVER_VERSION}`);
}

function findGo(): string {
  const go = findOnPath('go') ?? (fs.existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!go)
    throw new Error(
      `no Go toolchain: install Go so imgflow can build the Temporal server ${TEMPORAL_SERVER_VERSION} from the module proxy`,
    );
  return go;
}

function goInstall(go: string, into: string, packages: string[]): void {
  fs.mkdirSync(into, { recursive: true });
  const built = spawnSync(go, ['install', ...packages], {
    env: { ...process.env, GOBIN: into },
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (built.status !== 0)
    throw new Error(`go install ${packages.join(' ')} failed: ${built.stderr.trim().split('\n').slice(-1)[0]}`);
}

/** The binaries as they are in the cache now, without building anything. */
export function findServerBinaries(): ServerBinaries | undefined {
  const server = path.join(serverCacheDir(), 'server');
  const sql = path.join(serverCacheDir(), 'sql');
  if (!fs.existsSync(server) || !fs.existsSync(sql)) return undefined;
  const ui = path.join(uiCacheDir(), 'server');
  return { server, sql, ...(fs.existsSync(ui) ? { ui } : {}) };
}

/** Builds the server and its SQL tool when they are missing. */
export function ensureServerBinaries(say: (line: string) => void = () => {}): ServerBinaries {
  const dir = serverCacheDir();
  if (!fs.existsSync(path.join(dir, 'server')) || !fs.existsSync(path.join(dir, 'sql'))) {
    say(
      `building the Temporal server ${TEMPORAL_SERVER_VERSION} and its SQL tool into ${dir} (once; about 15 minutes)`,
    );
    goInstall(findGo(), dir, [
      `${SERVER_MODULE}/cmd/server@${TEMPORAL_SERVER_VERSION}`,
      `${SERVER_MODULE}/cmd/tools/sql@${TEMPORAL_SERVER_VERSION}`,
    ]);
  }
  return findServerBinaries()!;
}

/** Builds the Web UI server when it is missing; returns its path. */
export function ensureUiServer(say: (line: string) => void = () => {}): string {
  const ui = path.join(uiCacheDir(), 'server');
  if (!fs.existsSync(ui)) {
    say(`building the Temporal Web UI server ${UI_SERVER_VERSION} into ${uiCacheDir()} (once; a few minutes)`);
    goInstall(findGo(), uiCacheDir(), [`${UI_MODULE}/cmd/server@${UI_SERVER_VERSION}`]);
  }
  return ui;
}
