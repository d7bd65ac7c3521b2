/**
 * `imgflow demo`: the main job end to end on the embedded defaults, against the dev server, with
 * this host's workers run in-process for the length of the demo:
 *   1. the storage pipeline across two host queues (build a base, store it, clone it);
 *   2. a real build of a minimal Debian node image into a version of its lineage, with its report;
 *   3. the version tagged, tested, and promoted through test to prod;
 *   4. a subscription to a signed image list served by this process, synced, updated and synced again.
 * With `--cluster`, the same job runs on a site's hosts and their workers (demo-site.ts): the
 * build on builder-0 stored on nas-0, a map of the prod version to a compute host in place of
 * the storage pipeline (whose files move by path, as on one host), the list synced by cloud-0.
 */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import type { VersionRecord } from '../../common/lineage.js';
import { checkInt } from '../../common/names.js';
import { queues, ROLES, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { createRunner, type Run } from '../../activities/runner.js';
import { machineArch, type Config } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { demoWorkflow, type DemoSummary } from '../../workflows/demo.js';
import { promoteUpdate, requestBuildUpdate, tagUpdate, testResultUpdate } from '../../workflows/lineage/messages.js';
import { configFrom, currentUser, ensureClient, say, startLocalWorkers, type GlobalFlags } from '../context.js';
import { DEMO_IMAGE, demoRecipe } from '../demo-recipe.js';
import { demoSite, mapAcrossHosts, type DemoSite } from '../demo-site.js';
import { demoSubscription } from '../demo-subscription.js';
import { updateLineage } from '../lineage-client.js';
import { formatPairs, humanBytes, printJson, watchProgress } from '../output.js';
import { formatVersion, waitForBuild } from './build.js';

interface Step {
  title: string;
  run: () => Promise<{ summary: unknown; text: string }>;
}

async function storagePipeline(client: Client, config: Config, stamp: string, sizeMiB: number) {
  const arch = machineArch();
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
  const summary: DemoSummary = await watchProgress(handle, handle.result(), 'storage pipeline');
  if (!summary.volume.readsThrough) throw new Error(`the clone ${summary.volume.path} does not read through to its base`);
  const text = formatPairs([
    ['workflow', handle.workflowId],
    ['base', `${summary.image}:${summary.version} ${summary.base.path} (${humanBytes(summary.base.virtualBytes)} virtual, sha256 ${summary.base.sha256.slice(0, 16)}...)`],
    ['clone', `${summary.volume.name}: ${humanBytes(summary.volume.actualBytes)} on disk, reads through to its base`],
  ]);
  return { summary: { workflowId: handle.workflowId, ...summary }, text };
}

async function buildNodeImage(client: Client, store: string): Promise<{ summary: VersionRecord; text: string }> {
  const { recipe, digest } = demoRecipe();
  const by = currentUser();
  const ticket = await updateLineage(client, recipe.image, requestBuildUpdate, { recipe, recipeDigest: digest, by, message: 'demo build', store });
  const version = await waitForBuild(client, recipe.image, ticket.buildId, ticket.ahead);
  return { summary: version, text: formatVersion(version) };
}

async function promote(client: Client, version: VersionRecord) {
  const by = currentUser();
  const tag = await updateLineage(client, DEMO_IMAGE, tagUpdate, { by, version: version.id });
  await updateLineage(client, DEMO_IMAGE, promoteUpdate, { by, tag: tag.name, channel: 'test' });
  await updateLineage(client, DEMO_IMAGE, testResultUpdate, { by, tag: tag.name, passed: true, note: 'demo: image built and prepared' });
  const prod = await updateLineage(client, DEMO_IMAGE, promoteUpdate, { by, tag: tag.name, channel: 'prod' });
  const text = formatPairs([
    ['tag', `${tag.name} -> ${tag.version}`],
    ['test', `${tag.name} promoted, test result passed`],
    ['prod', `${prod.tag} (${prod.version}) promoted by ${prod.by}`],
  ]);
  return { summary: { tag: tag.name, prod }, text };
}

function mapStep(client: Client, run: Run, site: DemoSite, stamp: string): Step {
  return {
    title: `map the prod version from ${site.nas} to ${site.compute}, read it there${site.other ? ` and not on ${site.other}` : ''}`,
    run: () => mapAcrossHosts(client, run, site, `${DEMO_IMAGE}@prod`, `demo-vm-${stamp}`),
  };
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job end to end on the embedded defaults and print a summary')
    .option('--size-mib <n>', 'virtual size of the storage pipeline base image', '64')
    .option('--cluster <name>', "run on the hosts of this cluster (imgflow cluster up --compute N) with their workers; use with cluster env's settings")
    .action(async (opts: { sizeMib: string; cluster?: string }, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const config = configFrom(flags);
      const sizeMiB = checkInt('--size-mib', opts.sizeMib, 1, 65536);
      const site = opts.cluster === undefined ? undefined : demoSite(config, opts.cluster);
      const { client, connection, uiUrl } = await ensureClient(config);
      const logger = createLogger('imgflow-demo', process.env.IMGFLOW_LOG_LEVEL ?? 'error');
      const run = createRunner(logger);
      const local = site ? undefined : await startLocalWorkers(config, ROLES, logger);
      const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
      let version: VersionRecord | undefined;
      const steps: Step[] = [
        ...(site ? [] : [{ title: 'storage pipeline across builder and NAS queues', run: () => storagePipeline(client, config, stamp, sizeMiB) }]),
        {
          title: `build ${DEMO_IMAGE} (debootstrap minbase bookworm) into a new version${site ? ` on builder-0, stored on ${site.nas}` : ''}`,
          run: async () => {
            const built = await buildNodeImage(client, site?.nas ?? config.host);
            version = built.summary;
            return built;
          },
        },
        { title: 'tag it, test it, promote it through test to prod', run: () => promote(client, version!) },
        ...(site ? [mapStep(client, run, site, stamp)] : []),
        {
          title: `subscribe to a signed image list served here, sync it${site ? ` on ${site.cloud.site}` : ''}, then sync its next version`,
          run: () => demoSubscription(client, config, run, site?.cloud),
        },
      ];
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
        await connection.close();
      }
    });
}
