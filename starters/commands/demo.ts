/**
 * `imgflow demo`: the main job end to end on the embedded defaults, against the dev server, with
 * this host's workers run in-process for the length of the demo.
 */
import type { Command } from 'commander';
import { checkInt } from '../../common/names.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { machineArch } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { demoWorkflow, type DemoSummary } from '../../workflows/demo.js';
import { configFrom, ensureClient, startLocalWorkers, type GlobalFlags } from '../context.js';
import { formatPairs, humanBytes, printJson, watchProgress } from '../output.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job end to end on the embedded defaults and print a summary')
    .option('--size-mib <n>', 'virtual size of the demo base image', '64')
    .action(async (opts: { sizeMib: string }, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const config = configFrom(flags);
      const sizeMiB = checkInt('--size-mib', opts.sizeMib, 1, 65536);
      const arch = machineArch();
      const { client, connection, uiUrl } = await ensureClient(config);
      const local = await startLocalWorkers(config, ['orchestrator', 'builder', 'nas'], createLogger('imgflow-demo', process.env.IMGFLOW_LOG_LEVEL ?? 'error'));
      try {
        const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
        const image = 'demo-base';
        const volume = `demo-vm-${stamp}`;
        const handle = await client.workflow.start(demoWorkflow, {
          taskQueue: WORKFLOW_QUEUE,
          workflowId: `demo-${stamp}`,
          args: [{ image, volume, arch, nas: config.host, sizeMiB }],
          typedSearchAttributes: [
            { key: SA.kind, value: 'demo' },
            { key: SA.image, value: image },
            { key: SA.arch, value: arch },
            { key: SA.nas, value: config.host },
            { key: SA.volume, value: volume },
          ],
          staticSummary: `Demo: build ${image} on ${queues.builder(arch)}, clone it as ${volume} on ${queues.nas(config.host)}`,
        });
        const summary: DemoSummary = await watchProgress(handle, handle.result(), 'demo');
        const link = uiUrl ? `${uiUrl}/namespaces/${config.namespace}/workflows/${handle.workflowId}` : undefined;
        if (flags.json) {
          printJson({ workflowId: handle.workflowId, webUi: link ?? null, ...summary });
          return;
        }
        process.stdout.write(
          `${formatPairs([
            ['workflow', handle.workflowId],
            ['image', `${summary.image}:${summary.version}`],
            ['base', `${summary.base.path} (${humanBytes(summary.base.virtualBytes)} virtual, ${humanBytes(summary.base.bytes)} on disk)`],
            ['base sha256', summary.base.sha256],
            ['volume', `${summary.volume.name} on ${summary.volume.nas}: ${summary.volume.path}`],
            ['clone', `${humanBytes(summary.volume.actualBytes)} on disk, backed by ${summary.volume.backingFile ?? '-'}`],
            ['reads through', summary.volume.readsThrough ? 'yes (base pattern verified through the clone)' : 'NO'],
            ['web ui', link ?? '-'],
          ])}\n`,
        );
        if (!summary.volume.readsThrough) process.exitCode = 1;
      } finally {
        await local.stop();
        await connection.close();
      }
    });
}
