/**
 * The cluster's two PostgreSQL databases (history and visibility), named after the cluster so that
 * several clusters share one PostgreSQL. Creating and migrating them uses the server's own SQL
 * tool and the schema it carries (the server's version by construction), and is idempotent: `up`
 * on an existing cluster only applies what a newer schema adds.
 */
import { execFileSync } from 'node:child_process';
import { InputError } from '../../common/names.js';

export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432';

export interface Postgres {
  host: string;
  port: number;
  user: string;
  /** Secret: only in the server's private config file and the SQL tool's environment. */
  password: string;
}

export interface Databases {
  temporal: string;
  visibility: string;
}

export function parsePostgresUrl(url: string): Postgres {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InputError('--postgres-url', 'postgres://USER[:PASSWORD]@HOST[:PORT]');
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (
    !/^postgres(ql)?:$/.test(u.protocol) ||
    !host ||
    !u.username ||
    !/^[A-Za-z0-9_.-]{1,63}$/.test(decodeURIComponent(u.username))
  ) {
    // The URL may hold a password: it is never echoed.
    throw new InputError('--postgres-url', 'postgres://USER[:PASSWORD]@HOST[:PORT]');
  }
  return {
    host,
    port: u.port ? Number(u.port) : 5432,
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
  };
}

/** `imgflow_<cluster>_temporal` and `..._visibility`; the cluster name is a checked host name. */
export function databasesOf(cluster: string): Databases {
  const base = `imgflow_${cluster.replace(/-/g, '_')}`;
  return { temporal: `${base}_temporal`, visibility: `${base}_visibility` };
}

function sqlTool(sql: string, pg: Postgres, database: string, args: string[]): void {
  try {
    execFileSync(sql, ['--plugin', 'postgres12', ...args], {
      env: {
        ...process.env,
        SQL_HOST: pg.host,
        SQL_PORT: String(pg.port),
        SQL_USER: pg.user,
        SQL_PASSWORD: pg.password,
        SQL_DATABASE: database,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
      timeout: 300_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    const last = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim().split('\n').filter(Boolean).slice(-1)[0] ?? String(err);
    throw new Error(`temporal sql ${args[0]} on ${database} failed: ${last.slice(0, 300)}`);
  }
}

/** Creates both databases if missing and brings their schema to the server's version. */
export function migrateDatabases(sql: string, pg: Postgres, dbs: Databases): void {
  for (const [kind, database] of Object.entries(dbs) as [keyof Databases, string][]) {
    sqlTool(sql, pg, database, ['create-database']);
    sqlTool(sql, pg, database, ['setup-schema', '-v', '0.0']);
    sqlTool(sql, pg, database, ['update-schema', '--schema-name', `postgresql/v12/${kind}`]);
  }
}

export function dropDatabases(sql: string, pg: Postgres, dbs: Databases): void {
  for (const database of Object.values(dbs)) sqlTool(sql, pg, database, ['drop-database', '--force']);
}
