/**
 * A throwaway PostgreSQL for one test file: initdb into a temporary directory as the `postgres`
 * OS user (the server refuses to run as root), on a free loopback port with its socket in that
 * directory, trusting local connections. Stopping or restarting it never touches the machine's
 * own PostgreSQL, which other tests use. A missing PostgreSQL fails loudly.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { findOnPath } from '../../lib/which.js';
import { freePort } from './ports.js';

export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:<port>, as `imgflow cluster up --postgres-url` takes it. */
  url: string;
  port: number;
  dataDir: string;
  logFile: string;
  /** The postmaster's pid while it runs. */
  pid(): number | undefined;
  /** Stops it: `fast` disconnects clients and shuts down cleanly, `immediate` is a crash (recovery on start). */
  stop(mode?: 'fast' | 'immediate'): void;
  start(): void;
  /** Stops, stays down `downMs`, and starts again. */
  restart(o?: { mode?: 'fast' | 'immediate'; downMs?: number }): Promise<void>;
}

/** The directory holding initdb, pg_ctl and postgres: on PATH, else Debian's newest versioned one. */
function binDir(): string {
  const onPath = findOnPath('initdb');
  if (onPath && findOnPath('pg_ctl')) return path.dirname(fs.realpathSync(onPath));
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
    : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (!newest) throw new Error('PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql');
  return path.join(root, newest, 'bin');
}

function ids(user: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    throw new Error(`the ${user} OS user is missing: install postgresql`);
  }
}

/** Runs a PostgreSQL program as the `postgres` user. */
function asPostgres(argv: string[], timeoutMs = 120_000): string {
  const runuser = findOnPath('runuser', `${process.env.PATH ?? ''}:/usr/sbin:/sbin`);
  if (!runuser) throw new Error('runuser is missing (util-linux)');
  try {
    return execFileSync(runuser, ['-u', 'postgres', '--', ...argv], {
      encoding: 'utf8',
      timeout: timeoutMs,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    throw new Error(
      `${path.basename(argv[0]!)} failed: ${`${e.stderr ?? ''}${e.stdout ?? ''}`.trim().slice(-500) || String(err)}`,
    );
  }
}

export async function startPostgres(): Promise<TestPostgres & { destroy(): void }> {
  const bin = binDir();
  const { uid, gid } = ids('postgres');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-pg-'));
  // The postgres user must reach its directories below this root-owned one.
  fs.chmodSync(root, 0o755);
  const dataDir = path.join(root, 'data');
  const runDir = path.join(root, 'run');
  for (const dir of [dataDir, runDir]) {
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chownSync(dir, uid, gid);
  }
  const logFile = path.join(runDir, 'postgres.log');
  const port = await freePort();
  asPostgres([
    path.join(bin, 'initdb'),
    '-D',
    dataDir,
    '-U',
    'postgres',
    '--auth=trust',
    '--encoding=UTF8',
    '--no-sync',
  ]);
  // A Temporal cluster holds about 70 connections; durability is not what these tests are about.
  fs.appendFileSync(
    path.join(dataDir, 'postgresql.conf'),
    [
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${runDir}'`,
      'max_connections = 200',
      'shared_buffers = 32MB',
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      '',
    ].join('\n'),
  );
  const pgCtl = (...args: string[]) => asPostgres([path.join(bin, 'pg_ctl'), '-D', dataDir, ...args]);
  const pid = () => {
    try {
      const first = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      return first > 0 && fs.existsSync(`/proc/${first}`) ? first : undefined;
    } catch {
      return undefined;
    }
  };
  const pg: TestPostgres & { destroy(): void } = {
    url: `postgres://postgres@127.0.0.1:${port}`,
    port,
    dataDir,
    logFile,
    pid,
    start: () => void pgCtl('-l', logFile, '-w', '-t', '60', 'start'),
    stop: (mode = 'fast') => void pgCtl('-m', mode, '-w', '-t', '60', 'stop'),
    async restart(o = {}) {
      pg.stop(o.mode);
      if (o.downMs) await new Promise((r) => setTimeout(r, o.downMs));
      pg.start();
    },
    destroy() {
      if (pid()) pg.stop('immediate');
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  try {
    pg.start();
  } catch (err) {
    pg.destroy();
    throw err;
  }
  return pg;
}

/**
 * A throwaway PostgreSQL started before the file's tests and removed after them; the function
 * returned gives it once started. Call it before registering hooks that still need the server
 * (a cluster's `down`): after-hooks run in reverse order, so those run first.
 */
export function usePostgres(): () => TestPostgres {
  let pg: (TestPostgres & { destroy(): void }) | undefined;
  beforeAll(async () => {
    pg = await startPostgres();
  }, 180_000);
  afterAll(() => pg?.destroy());
  return () => {
    if (!pg) throw new Error('the test PostgreSQL did not start');
    return pg;
  };
}
