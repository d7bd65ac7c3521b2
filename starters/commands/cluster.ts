/**
 * `imgflow cluster up|status|down|restart|certs|token|env`: a production Temporal cluster on this
 * machine (PostgreSQL, one process per service, mutual TLS, tokens checked on every call).
 */
import type { Command } from 'commander';
import { checkInt, InputError } from '../../common/names.js';
import { CONNECTION_ENV, paths } from '../../lib/config.js';
import { TEMPORAL_SERVER_VERSION, UI_SERVER_VERSION } from '../cluster/build.js';
import {
  checkClusterName,
  DEFAULT_CLUSTER,
  MAX_COMPUTE,
  TEMPORAL_SERVICES,
  type TemporalService,
} from '../cluster/state.js';
import { configFrom, currentUser, say, type GlobalFlags } from '../context.js';
import { formatPairs, formatTable, oneLine, printJson } from '../output.js';
import { registerClusterHosts } from './cluster-hosts.js';

/** What the actions need, loaded when one runs (never for --help). */
const load = async () => ({
  ...(await import('../cluster/cluster.js')),
  ...(await import('../cluster/site.js')),
  ...(await import('../cluster/pki.js')),
  ...(await import('../cluster/services.js')),
  ...(await import('../cluster/state.js')),
  ...(await import('../cluster/tokens.js')),
  ...(await import('../cluster/build.js')),
  machineArch: (await import('../../lib/config.js')).machineArch,
});

interface ClusterFlags extends GlobalFlags {
  name: string;
}

interface UpFlags {
  postgresUrl?: string;
  listen: string;
  san: string[];
  siteCa?: string;
  siteCert?: string;
  siteKey?: string;
  compute?: string;
  nasPool?: string;
}

function clusterDir(cmd: Command): { dir: string; name: string; flags: ClusterFlags } {
  const flags = cmd.optsWithGlobals<ClusterFlags>();
  const name = checkClusterName(flags.name);
  return { dir: paths(configFrom(flags)).cluster(name), name, flags };
}

/** The settings a client of the cluster uses, as the Temporal CLI's environment variables. */
function clientEnv(
  address: string,
  tls: { certPath?: string; keyPath?: string; caPath?: string; serverName?: string },
  apiKeyFile: string,
  namespace: string,
): [string, string][] {
  const e = CONNECTION_ENV;
  return [
    [e.address, address],
    [e.namespace, namespace],
    [e.certPath, tls.certPath!],
    [e.keyPath, tls.keyPath!],
    [e.caPath, tls.caPath!],
    ...(tls.serverName ? [[e.serverName, tls.serverName] as [string, string]] : []),
    [e.apiKeyFile, apiKeyFile],
  ];
}

const IP_OR_NAME = /^([0-9]{1,3}(\.[0-9]{1,3}){3}|[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)$/;

function collect(value: string, previous: string[]): string[] {
  if (!IP_OR_NAME.test(value)) throw new InputError('--san', 'an IPv4 address or a DNS name', value);
  return [...previous, value];
}

export function registerCluster(program: Command): void {
  const cluster = program
    .command('cluster')
    .description(
      'a production Temporal cluster on this machine: PostgreSQL, one process per service, mutual TLS and tokens',
    )
    .option('--name <name>', 'the cluster (databases and state directory are named after it)', DEFAULT_CLUSTER);
  // The hosts of the topology, each in a network namespace of its own.
  registerClusterHosts(cluster);

  cluster
    .command('up')
    .description(
      'build what is missing, make certificates and keys, migrate the databases, start every service; idempotent',
    )
    .option(
      '--postgres-url <url>',
      'postgres://USER[:PASSWORD]@HOST[:PORT] (env IMGFLOW_POSTGRES_URL; default the local server as postgres)',
    )
    .option('--listen <ip>', 'the address the frontend listens on', '127.0.0.1')
    .option('--san <name-or-ip>', "another name or address in the frontend's certificate (repeatable)", collect, [])
    .option('--site-ca <file>', "the site's own CA: clients must hold a certificate it signed")
    .option('--site-cert <file>', "the frontend's certificate from the site's CA")
    .option('--site-key <file>', "the frontend's key")
    .option(
      '--compute <n>',
      `also the hosts, each in a network namespace with its own address and worker: builder-0, nas-0, compute-0..<n-1>, cloud-0, control-0 (1-${MAX_COMPUTE}); the frontend then listens on their bridge`,
    )
    .option(
      '--nas-pool <dataset>',
      "with --compute: the ZFS dataset nas-0 stores on (default: a file-backed pool in the cluster's directory)",
    )
    .action(async (opts: UpFlags, cmd: Command) => {
      const { dir, name, flags } = clusterDir(cmd);
      if (!/^[0-9]{1,3}(\.[0-9]{1,3}){3}$/.test(opts.listen))
        throw new InputError('--listen', 'an IPv4 address', opts.listen);
      const siteFiles = [opts.siteCa, opts.siteCert, opts.siteKey].filter(Boolean);
      if (siteFiles.length !== 0 && siteFiles.length !== 3)
        throw new InputError('--site-ca', '--site-ca, --site-cert and --site-key together');
      const compute = opts.compute === undefined ? undefined : checkInt('--compute', opts.compute, 1, MAX_COMPUTE);
      if (opts.nasPool !== undefined && compute === undefined)
        throw new InputError('--nas-pool', 'to come with --compute (the NAS is one of the hosts)', opts.nasPool);
      if (compute !== undefined && cmd.getOptionValueSource('listen') === 'cli')
        throw new InputError(
          '--listen',
          "to be left out with --compute (the frontend listens on the hosts' bridge)",
          opts.listen,
        );
      const config = configFrom(flags);
      const { clusterUp, siteUp } = await load();
      const postgresUrl = opts.postgresUrl ?? process.env.IMGFLOW_POSTGRES_URL;
      const options = {
        name,
        dir,
        namespace: config.namespace,
        sans: opts.san,
        ...(postgresUrl ? { postgresUrl } : {}),
        ...(siteFiles.length
          ? { site: { caPath: opts.siteCa!, certPath: opts.siteCert!, keyPath: opts.siteKey! } }
          : {}),
        say,
      };
      const up =
        compute === undefined
          ? await clusterUp({ ...options, listen: opts.listen })
          : (
              await siteUp({
                ...options,
                compute,
                codecKeys: config.codecKeys,
                ...(opts.nasPool ? { nasPool: opts.nasPool } : {}),
              })
            ).cluster;
      const env = clientEnv(up.operator.address, up.operator.tls, up.operator.apiKeyFile, config.namespace);
      const result = {
        cluster: name,
        frontend: up.operator.address,
        namespace: config.namespace,
        started: up.started,
        webUi: up.uiUrl ?? null,
        stateDir: dir,
        env: Object.fromEntries(env),
      };
      if (flags.json) return printJson(result);
      process.stdout.write(
        `${formatPairs([
          ['cluster', name],
          ['frontend', up.operator.address],
          ['namespace', config.namespace],
          ['started', up.started.join(', ') || 'nothing (all up)'],
          ['web UI', up.uiUrl ?? 'not built (scripts/setup.sh builds it)'],
          ['state', dir],
        ])}\n\nthis machine's operator connects with (eval "$(imgflow cluster env)"):\n${env.map(([k, v]) => `  ${k}=${v}`).join('\n')}\n`,
      );
    });

  cluster
    .command('install')
    .description(
      `build the Temporal server ${TEMPORAL_SERVER_VERSION}, its SQL tool and the Web UI server ${UI_SERVER_VERSION} into the per-user cache, once`,
    )
    .action(async () => {
      const { ensureServerBinaries, ensureUiServer } = await load();
      const bins = ensureServerBinaries(say);
      let ui: string | null = null;
      try {
        ui = ensureUiServer(say);
      } catch (err) {
        // The cluster runs without its Web UI; say why it is missing.
        say(`the Web UI server was not built: ${oneLine(err)}`);
      }
      process.stdout.write(
        `${formatPairs([
          ['server', bins.server],
          ['sql', bins.sql],
          ['ui', ui],
        ])}\n`,
      );
    });

  cluster
    .command('status')
    .description(
      "each process of the cluster (up or down, pid, address) and, with hosts, each host's workers and the pollers on their queues",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const { dir, flags } = clusterDir(cmd);
      const { readState, processStatuses, siteStatus, machineArch, frontendAddress } = await load();
      const state = readState(dir);
      const rows = await processStatuses(state);
      const hosts = await siteStatus(state, machineArch());
      if (flags.json)
        printJson({
          cluster: state.name,
          frontend: frontendAddress(state),
          namespace: state.namespace,
          processes: rows,
          ...(hosts ? { hosts } : {}),
        });
      else {
        process.stdout.write(
          `${formatTable(rows as unknown as Record<string, unknown>[], ['name', 'state', 'pid', 'address'])}\n`,
        );
        if (hosts)
          process.stdout.write(
            `\n${formatTable(hosts as unknown as Record<string, unknown>[], ['host', 'address', 'link', 'queue', 'worker', 'pollers'])}\n`,
          );
      }
      if (rows.some((r) => r.state === 'down') || hosts?.some((h) => h.worker === 'down' || h.pollers === 0))
        process.exitCode = 1;
    });

  cluster
    .command('down')
    .description(
      "stop every process the cluster started and remove its hosts (namespaces, bridge, tgtd, the NAS's pool); --drop-databases also removes its databases and state",
    )
    .option('--drop-databases', 'drop both databases and remove the state directory')
    .action(async (opts: { dropDatabases?: boolean }, cmd: Command) => {
      const { dir, flags } = clusterDir(cmd);
      const { siteDown } = await load();
      const stopped = await siteDown(dir, { dropDatabases: Boolean(opts.dropDatabases), say });
      if (flags.json) printJson({ stopped, dropped: Boolean(opts.dropDatabases) });
      else
        say(
          `stopped: ${stopped.join(', ') || 'nothing was running'}${opts.dropDatabases ? '; databases dropped' : ''}`,
        );
    });

  cluster
    .command('restart')
    .description('kill one Temporal service (as a crash would, SIGKILL) and start it again')
    .requiredOption('--service <service>', TEMPORAL_SERVICES.join(', '))
    .option('--graceful', 'SIGTERM instead of SIGKILL')
    .action(async (opts: { service: string; graceful?: boolean }, cmd: Command) => {
      const { dir } = clusterDir(cmd);
      if (!(TEMPORAL_SERVICES as readonly string[]).includes(opts.service))
        throw new InputError('--service', TEMPORAL_SERVICES.join(', '), opts.service);
      const { restartService } = await load();
      const pid = await restartService(dir, opts.service as TemporalService, {
        signal: opts.graceful ? 'SIGTERM' : 'SIGKILL',
      });
      say(`${opts.service} restarted (pid ${pid})`);
    });

  cluster
    .command('certs')
    .description(
      "issue a client certificate from the cluster's CA for a host or role (its name in the CN); prints the files",
    )
    .requiredOption('--client <name>', 'the host or role, e.g. nas-0')
    .action(async (opts: { client: string }, cmd: Command) => {
      const { dir, flags } = clusterDir(cmd);
      const { readState, issueClientCert, frontendAddress } = await load();
      const state = readState(dir);
      const pair = issueClientCert(state.pki, opts.client);
      const files = { cert: pair.cert, key: pair.key, ca: state.pki.caCert, frontend: frontendAddress(state) };
      if (flags.json) printJson(files);
      else process.stdout.write(`${formatPairs(Object.entries(files))}\n`);
    });

  cluster
    .command('token')
    .description('mint a token: operator (change things), viewer (list, describe, query), worker, admin (the cluster)')
    .requiredOption('--role <role>', 'operator, viewer, worker or admin')
    .option('--sub <name>', 'who the token is for (default: the current user)')
    .option('--ttl <duration>', 'lifetime: seconds, or 15m, 12h, 30d', '12h')
    .option('--out <file>', 'write it to this file (0600) instead of stdout')
    .action(async (opts: { role: string; sub?: string; ttl: string; out?: string }, cmd: Command) => {
      const { dir } = clusterDir(cmd);
      const { readState, mintToken, checkRole, parseTtl, writeTokenFile } = await load();
      const state = readState(dir);
      const token = mintToken(state.signingKey, {
        role: checkRole(opts.role),
        namespace: state.namespace,
        subject: opts.sub ?? currentUser(),
        ttlSeconds: parseTtl(opts.ttl),
      });
      if (opts.out) writeTokenFile(opts.out, token);
      else process.stdout.write(`${token}\n`);
    });

  cluster
    .command('env')
    .description('shell settings for a client of the cluster: eval "$(imgflow cluster env)"')
    .option('--client <name>', 'the client certificate to use', 'operator')
    .option('--role <role>', 'the token to mint for it', 'operator')
    .option('--ttl <duration>', "the token's lifetime", '12h')
    .action(async (opts: { client: string; role: string; ttl: string }, cmd: Command) => {
      const { dir, flags } = clusterDir(cmd);
      const { readState, issueClientCert, checkRole, tokenFor, parseTtl, clientTls, frontendAddress } = await load();
      const state = readState(dir);
      const pair = issueClientCert(state.pki, opts.client);
      const role = checkRole(opts.role);
      const apiKeyFile = tokenFor(
        state,
        role,
        `${opts.client}@${state.name}`,
        parseTtl(opts.ttl),
        `${opts.client}-${role}`,
      );
      const env = clientEnv(frontendAddress(state), clientTls(state, pair), apiKeyFile, state.namespace);
      if (flags.json) printJson(Object.fromEntries(env));
      else process.stdout.write(`${env.map(([k, v]) => `export ${k}='${v.replace(/'/g, "'\\''")}'`).join('\n')}\n`);
    });
}
