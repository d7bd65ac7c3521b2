/**
 * `imgflow cluster hosts up|down|status|link|run`: the cluster's hosts on this machine, each in a
 * network namespace of its own on the cluster's bridge (see starters/cluster/hosts.ts). The
 * Temporal frontend must listen on the bridge's gateway before the workers start: `up --no-workers`
 * makes the network alone, so that a frontend can be started on it first.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { checkHost, checkInt, InputError } from '../../common/names.js';
import { paths } from '../../lib/config.js';
import type { HostsState } from '../cluster/hosts.js';
import { checkClusterName, MAX_COMPUTE } from '../cluster/state.js';
import { configFrom, say, type GlobalFlags } from '../context.js';
import { formatTable, printJson } from '../output.js';

/** The hosts' code (namespaces, links, workers), loaded when a command runs (never for --help). */
const hostsModule = () => import('../cluster/hosts.js');

/** The cluster's directory: `--dir`, else the named cluster's (where `cluster up --compute` puts its hosts). */
function clusterDir(cmd: Command, dir?: string): string {
  const flags = cmd.optsWithGlobals<GlobalFlags & { name: string }>();
  return path.resolve(dir ?? paths(configFrom(flags)).cluster(checkClusterName(flags.name)));
}

async function requireState(dir: string): Promise<HostsState> {
  const state = (await hostsModule()).readHostsState(dir);
  if (!state)
    throw new InputError('--dir', `a cluster directory whose hosts are up (no ${path.join(dir, 'hosts.json')})`, dir);
  return state;
}

async function printStatus(state: HostsState, json: boolean | undefined): Promise<void> {
  const rows = (await hostsModule()).hostStatus(state);
  if (json) return printJson({ bridge: state.bridge, gateway: state.gateway, frontend: state.frontend, hosts: rows });
  const table = rows.map((row) => ({
    ...row,
    namespace: row.up ? 'up' : 'absent',
    workers: row.workers.map((w) => `${w.role}:${w.pid}${w.running ? '' : ' (exited)'}`).join(' ') || '-',
    tgtd: row.tgtd
      ? `${row.tgtd.running ? `pid ${row.tgtd.pid}` : 'down'} -C ${row.tgtd.controlPort ?? '?'}`
      : undefined,
  }));
  process.stdout.write(`bridge ${state.bridge}, gateway ${state.gateway}, frontend ${state.frontend}\n`);
  process.stdout.write(`${formatTable(table, ['host', 'address', 'namespace', 'link', 'workers', 'tgtd'])}\n`);
}

export function registerClusterHosts(cluster: Command): void {
  const hosts = cluster
    .command('hosts')
    .description("the cluster's hosts: a network namespace each, with its own address and worker");

  hosts
    .command('up')
    .description(
      "bring up the bridge, one namespace per host, tgtd in nas-0 and the hosts' workers (again: finishes what is missing)",
    )
    .option('--dir <dir>', "the cluster's directory (default: the cluster's)")
    .option('--compute <n>', 'compute hosts', '3')
    .option('--frontend-port <port>', "Temporal frontend's port on the bridge's gateway", '7233')
    .option('--workers <hosts>', 'comma-separated hosts whose workers start (default: all)')
    .option('--no-workers', 'the network and tgtd only')
    .action(
      async (
        opts: { dir?: string; compute: string; frontendPort: string; workers?: string | boolean },
        cmd: Command,
      ) => {
        const compute = checkInt('--compute', opts.compute, 1, MAX_COMPUTE);
        const frontendPort = checkInt('--frontend-port', opts.frontendPort, 1, 65_535);
        const workers =
          opts.workers === false
            ? []
            : typeof opts.workers === 'string'
              ? opts.workers.split(',').map((h) => checkHost('--workers', h))
              : undefined;
        const state = await (
          await hostsModule()
        ).upHosts({ dir: clusterDir(cmd, opts.dir), compute, frontendPort, ...(workers ? { workers } : {}) }, say);
        await printStatus(state, cmd.optsWithGlobals<GlobalFlags>().json);
      },
    );

  hosts
    .command('down')
    .description("stop every worker and tgtd, remove the namespaces, veths and bridge the hosts' up made")
    .option('--dir <dir>', "the cluster's directory (default: the cluster's)")
    .action(async (opts: { dir?: string }, cmd: Command) => {
      const { readHostsState, downHosts } = await hostsModule();
      const state = readHostsState(clusterDir(cmd, opts.dir));
      if (!state) return say('no hosts are up');
      await downHosts(state, say);
    });

  hosts
    .command('status')
    .description('each host: address, namespace, link, workers and (nas-0) tgtd')
    .option('--dir <dir>', "the cluster's directory (default: the cluster's)")
    .action(async (opts: { dir?: string }, cmd: Command) => {
      await printStatus(await requireState(clusterDir(cmd, opts.dir)), cmd.optsWithGlobals<GlobalFlags>().json);
    });

  hosts
    .command('link')
    .description("plug or unplug a host's cable (fault tests: a host cut off)")
    .argument('<host>', 'builder-0, nas-0, compute-<i>, cloud-0 or control-0')
    .argument('<state>', 'up or down')
    .option('--dir <dir>', "the cluster's directory (default: the cluster's)")
    .action(async (host: string, updown: string, opts: { dir?: string }, cmd: Command) => {
      if (updown !== 'up' && updown !== 'down') throw new InputError('state', 'up or down', updown);
      await (
        await hostsModule()
      ).setLink(await requireState(clusterDir(cmd, opts.dir)), checkHost('host', host), updown);
    });

  hosts
    .command('run')
    .description("run one command inside a host's network namespace (argv after --, no shell)")
    .argument('<host>', 'the host')
    .argument('<argv...>', 'the command and its arguments')
    .option('--dir <dir>', "the cluster's directory (default: the cluster's)")
    .action(async (host: string, argv: string[], opts: { dir?: string }, cmd: Command) => {
      const result = await (
        await hostsModule()
      ).runOn(await requireState(clusterDir(cmd, opts.dir)), checkHost('host', host), argv, {
        okExitCodes: Array.from({ length: 255 }, (_, i) => i + 1),
      });
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
      process.exitCode = result.exitCode;
    });
}
