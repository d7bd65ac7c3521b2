/** `imgflow worker`: one role's worker on this host, until SIGINT/SIGTERM drains it. */
import type { Command } from 'commander';
import { checkArch, checkHost } from '../../common/names.js';
import { machineArch } from '../../lib/config.js';
import { configFrom, type GlobalFlags } from '../context.js';

/** What the worker needs, loaded when it runs (never for --help). */
const load = async () => ({
  ...(await import('@temporalio/worker')),
  ...(await import('../../lib/connection.js')),
  ...(await import('../../lib/logger.js')),
  ...(await import('../../workers/runtime.js')),
  ...(await import('../../workers/roles.js')),
  ...(await import('../../workers/worker.js')),
  ...(await import('../temporal-server.js')),
});

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description('run the worker of one role on this host (drains on SIGINT/SIGTERM)')
    .requiredOption('--role <role>', 'orchestrator, builder, nas, compute, cloud or control')
    .option('--host <name>', "this host's name on task queues (default: the short host name)")
    .option('--arch <arch>', "the builder's architecture (default: this machine's)")
    .option('--site <name>', 'the cloud site a cloud worker serves (default: the host name)')
    .option('--metrics <host:port>', 'Prometheus endpoint for this process; empty to disable')
    .action(
      async (opts: { role: string; host?: string; arch?: string; site?: string; metrics?: string }, cmd: Command) => {
        const {
          checkRole,
          connectionSettings,
          connectOrFail,
          createLogger,
          createWorker,
          installRuntime,
          NativeConnection,
        } = await load();
        const role = checkRole(opts.role);
        const config = configFrom(cmd.optsWithGlobals<GlobalFlags>(), {
          ...(opts.host !== undefined ? { host: checkHost('host', opts.host) } : {}),
          ...(opts.site !== undefined ? { site: checkHost('site', opts.site) } : {}),
          ...(opts.metrics !== undefined ? { metricsAddress: opts.metrics } : {}),
        });
        const arch = checkArch('arch', opts.arch ?? machineArch());
        const logger = createLogger('imgflow-worker').child({ role, host: config.host });
        // Fail fast and in one line when the server is not there, before any worker starts.
        const settings = connectionSettings(config);
        const probe = await connectOrFail(
          settings,
          config.connectTimeoutMs,
          'is the server up, and are the address, TLS and token settings right?',
        );
        await probe.close();
        installRuntime(logger, config.metricsAddress);
        const connection = await NativeConnection.connect(settings);
        const { worker, plan } = await createWorker({ role, config, arch, connection, logger });
        logger.info(
          { taskQueue: plan.taskQueue, namespace: config.namespace, metrics: config.metricsAddress || 'off' },
          'worker started',
        );
        await worker.run();
        await connection.close();
        logger.info('worker drained and stopped');
      },
    );
}
