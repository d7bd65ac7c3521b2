/**
 * `imgflow demo`: the main job end to end on the embedded defaults, against the dev server, with
 * this host's workers run in-process for the length of the demo:
 *   1. the storage pipeline across two host queues (build a base, store it, clone it);
 *   2. a real build of a minimal Debian node image into a version of its lineage, with its report;
 *   3. the same image built for a second arch (i686 on x86_64) by a builder worker of that arch;
 *   4. the first version tagged, tested, and promoted through test to prod;
 *   5. a subscription to a signed image list served by this process, synced, updated and synced again;
 *   6. the prod version pushed, signed, to a registry this process starts on loopback, and registered
 *      with its signature verified by a second site (a state directory and cloud worker of its own);
 *   7. the prod version mapped to a volume, revoked, and the fleet showing the volume on it.
 * With `--cluster`, the same job runs on a site's hosts and their workers (demo-site.ts): the
 * build on builder-0 stored on nas-0, a map of the prod version to a compute host in place of
 * the storage pipeline (whose files move by path, as on one host), the list synced by cloud-0, no
 * second arch, no second site.
 */
import type { Command } from 'commander';
import { checkInt, InputError } from '../../common/names.js';
import { ROLES } from '../../common/queues.js';
import { configFrom, connected, say, type GlobalFlags } from '../context.js';
import { printJson } from '../output.js';

/** What the action needs, loaded when it runs (never for --help). */
const clients = async () => ({
  ...(await import('../client.js')),
  ...(await import('../demo-client.js')),
  ...(await import('../demo-arch.js')),
  ...(await import('../demo-site.js')),
  ...(await import('../local-workers.js')),
  ...(await import('../../activities/runner.js')),
  ...(await import('../../lib/logger.js')),
});

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job end to end on the embedded defaults and print a summary')
    .option('--size-mib <n>', 'virtual size of the storage pipeline base image', '64')
    .option(
      '--cluster <name>',
      "run on the hosts of this cluster (imgflow cluster up --compute N) with their workers; use with cluster env's settings",
    )
    .option(
      '--second-arch <arch>',
      'the arch the demo image is also built for, by a builder worker of its own (default: i686 on x86_64, else x86_64; not with --cluster)',
    )
    .action(async (opts: { sizeMib: string; cluster?: string; secondArch?: string }, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const config = configFrom(flags);
      const sizeMiB = checkInt('--size-mib', opts.sizeMib, 1, 65536);
      const c = await clients();
      const site = opts.cluster === undefined ? undefined : c.demoSite(config, opts.cluster);
      const logger = c.createLogger('imgflow-demo', process.env.IMGFLOW_LOG_LEVEL ?? 'error');
      const run = c.createRunner(logger);
      // Emulation that cannot be set up here fails the demo before it starts anything.
      if (site && opts.secondArch)
        throw new InputError('--second-arch', 'no second arch with --cluster', opts.secondArch);
      const secondArch = site ? undefined : c.secondArchOption(opts.secondArch);
      if (secondArch) await c.secondArchPlatform(secondArch, { run });
      await connected(
        cmd,
        async () => c,
        async ({ client, uiUrl }) => {
          const local = site ? undefined : await c.startLocalWorkers(config, ROLES, logger, [secondArch!]);
          const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
          const steps = c.demoSteps(client, config, {
            run,
            logger,
            stamp,
            sizeMiB,
            ...(site ? { site } : { secondArch: secondArch! }),
          });
          const results: Record<string, unknown> = {};
          try {
            for (const [i, step] of steps.entries()) {
              say(`[${i + 1}/${steps.length}] ${step.title}`);
              const { summary, text } = await step.run();
              results[`step${i + 1}`] = summary;
              if (!flags.json) process.stdout.write(`${text}\n\n`);
            }
            const ui = site ? site.webUi : uiUrl;
            const webUi = ui ? `${ui}/namespaces/${config.namespace}/workflows` : null;
            if (flags.json) printJson({ ...results, webUi });
            else process.stdout.write(`Web UI: ${webUi ?? '-'}\n`);
          } finally {
            await local?.stop();
          }
        },
        { startServer: true },
      );
    });
}
