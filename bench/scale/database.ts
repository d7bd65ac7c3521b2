/**
 * What the scale bench reads from the cluster's PostgreSQL with psql: the backends serving the
 * cluster's two databases (their CPU is the database's share of the work), and the databases'
 * sizes with that of the history table.
 */
import type { Run } from '../../activities/runner.js';
import type { Databases, Postgres } from '../../starters/cluster/database.js';

function psql(run: Run, pg: Postgres, database: string, sql: string): Promise<string> {
  return run(
    ['psql', '-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', database, '-X', '-A', '-t', '-c', sql],
    {
      env: pg.password ? { PGPASSWORD: pg.password } : {},
      timeoutMs: 60_000,
    },
  ).then((r) => r.stdout.trim());
}

/** Database names come from `databasesOf`: checked host names with `_`, safe as SQL literals. */
const literal = (name: string) => {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`unexpected database name ${name}`);
  return `'${name}'`;
};

/** The pids of the backends connected to the cluster's databases now. */
export async function backendPids(run: Run, pg: Postgres, dbs: Databases): Promise<number[]> {
  const out = await psql(
    run,
    pg,
    'postgres',
    `select pid from pg_stat_activity where datname in (${literal(dbs.temporal)}, ${literal(dbs.visibility)})`,
  );
  return out.split('\n').filter(Boolean).map(Number);
}

export interface DbSizes {
  temporal: number;
  visibility: number;
  /** history_node with its indexes and TOAST: the workflows' event histories. */
  history: number;
}

export async function dbSizes(run: Run, pg: Postgres, dbs: Databases): Promise<DbSizes> {
  const [temporal, history] = (
    await psql(
      run,
      pg,
      dbs.temporal,
      "select pg_database_size(current_database()) || ',' || pg_total_relation_size('history_node')",
    )
  )
    .split(',')
    .map(Number);
  const visibility = Number(await psql(run, pg, dbs.visibility, 'select pg_database_size(current_database())'));
  return { temporal: temporal!, visibility, history: history! };
}
