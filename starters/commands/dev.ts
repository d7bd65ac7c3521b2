/** `imgflow dev` and `imgflow server`: the local Temporal server and this host's workers. */
import type { Command } from 'commander';
import { ROLES } from '../../common/queues.js';
import { configFrom, say, type GlobalFlags } from '../context.js';
import { formatPairs, printJson } from '../output.js';
import { ensureTemporalCli, TEMPORAL_CLI_VERSION } from '../temporal-cli.js';

/** Starts the dev server unless one answers at the configured address; its Web UI when imgflow manages it. */
async function ensureServerUp(flags: GlobalFlags) {
  const config = configFrom(flags);
  const { withClient } = await import('../client.js');
  const uiUrl = await withClient(config, async (session) => session.uiUrl, { startServer: true });
  return { config, uiUrl };
}

export function registerDev(program: Command): void {
  program
    .command('dev')
    .description('start or reuse the dev server, run one worker per role for this host until Ctrl-C')
    .action(async (_opts: unknown, cmd: Command) => {
      const { config, uiUrl } = await ensureServerUp(cmd.optsWithGlobals<GlobalFlags>());
      const [{ startLocalWorkers }, { createLogger }] = await Promise.all([
        import('../local-workers.js'),
        import('../../lib/logger.js'),
      ]);
      const local = await startLocalWorkers(config, ROLES, createLogger('imgflow-dev'));
      say(`Temporal at ${config.address}, namespace ${config.namespace}; Web UI: ${uiUrl ?? 'not managed by imgflow'}`);
      say(`workers: ${local.workers.map((w) => w.options.taskQueue).join(', ')} (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      say('draining workers...');
      await local.stop();
    });

  const server = program.command('server').description('the local Temporal dev server imgflow manages');
  server
    .command('start')
    .description('start the dev server if nothing answers at the address, and register imgflow there')
    .action(async (_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const { config, uiUrl } = await ensureServerUp(flags);
      const status = { address: config.address, namespace: config.namespace, webUi: uiUrl ?? null };
      if (flags.json) printJson(status);
      else process.stdout.write(`${formatPairs(Object.entries(status))}\n`);
    });
  server
    .command('install-cli')
    .description(
      `find the Temporal CLI, or build ${TEMPORAL_CLI_VERSION} with Go into the per-user cache; prints its path`,
    )
    .action(() => {
      process.stdout.write(`${ensureTemporalCli(say)}\n`);
    });
  server
    .command('stop')
    .description('stop the dev server that imgflow started')
    .action(async (_opts: unknown, cmd: Command) => {
      const config = configFrom(cmd.optsWithGlobals<GlobalFlags>());
      const { stopServer } = await import('../temporal-server.js');
      say(stopServer(config) ? 'stopped the dev server' : 'no dev server started by imgflow is running');
    });
}
