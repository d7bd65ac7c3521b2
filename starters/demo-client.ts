/**
 * The steps of `imgflow demo`, each a title and what it runs against the server: on this host,
 * the storage pipeline across two host queues, a real build, the same image built for a second
 * arch on that arch's builder, the first build's promotion, an image-list subscription, the prod
 * version through an OCI registry to a second site, and a revocation seen in the fleet; on a
 * site's hosts (demo-site.ts), a map across hosts in place of the pipeline, no second arch and no
 * second site.
 */
import type { Client } from '@temporalio/client';
import type { Run } from '../activities/runner.js';
import type { Arch } from '../common/arch.js';
import type { VersionRecord } from '../common/lineage.js';
import { queues, WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import { machineArch, type Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { demoWorkflow, type DemoSummary } from '../workflows/demo.js';
import {
  promoteUpdate,
  requestBuildUpdate,
  tagUpdate,
  testResultUpdate,
  type BuildTicket,
} from '../workflows/lineage/messages.js';
import { formatVersion, waitForBuild } from './build-client.js';
import { currentUser } from './context.js';
import { checkSecondArchVersion, formatPackageArches, packageArches } from './demo-arch.js';
import { DEMO_IMAGE, demoImage, demoRecipe } from './demo-recipe.js';
import { mapAcrossHosts, type DemoSite } from './demo-site.js';
import { demoRevocation } from './demo-fleet.js';
import { demoOciSites, DEMO_OCI_SITE } from './demo-oci.js';
import { demoSubscription } from './demo-subscription.js';
import { updateLineage } from './lineage-client.js';
import { formatPairs, humanBytes, watchProgress } from './output.js';

export interface Step {
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
  if (!summary.volume.readsThrough)
    throw new Error(`the clone ${summary.volume.path} does not read through to its base`);
  const text = formatPairs([
    ['workflow', handle.workflowId],
    [
      'base',
      `${summary.image}:${summary.version} ${summary.base.path} (${humanBytes(summary.base.virtualBytes)} virtual, sha256 ${summary.base.sha256.slice(0, 16)}...)`,
    ],
    ['clone', `${summary.volume.name}: ${humanBytes(summary.volume.actualBytes)} on disk, reads through to its base`],
  ]);
  return { summary: { workflowId: handle.workflowId, ...summary }, text };
}

/** A build of the demo image for `arch` asked of its lineage: what to follow it by. */
interface DemoBuild {
  image: string;
  ticket: BuildTicket;
}

async function requestDemoBuild(client: Client, store: string, arch: string): Promise<DemoBuild> {
  const { recipe, digest } = demoRecipe(arch);
  const ticket = await updateLineage(client, recipe.image, requestBuildUpdate, {
    recipe,
    recipeDigest: digest,
    by: currentUser(),
    message: 'demo build',
    store,
  });
  return { image: recipe.image, ticket };
}

async function followDemoBuild(
  client: Client,
  { image, ticket }: DemoBuild,
): Promise<{ summary: VersionRecord; text: string }> {
  const version = await waitForBuild(client, image, ticket.buildId, ticket.ahead);
  return { summary: version, text: formatVersion(version) };
}

async function promote(client: Client, version: VersionRecord) {
  const by = currentUser();
  const tag = await updateLineage(client, DEMO_IMAGE, tagUpdate, { by, version: version.id });
  await updateLineage(client, DEMO_IMAGE, promoteUpdate, { by, tag: tag.name, channel: 'test' });
  await updateLineage(client, DEMO_IMAGE, testResultUpdate, {
    by,
    tag: tag.name,
    passed: true,
    note: 'demo: image built and prepared',
  });
  const prod = await updateLineage(client, DEMO_IMAGE, promoteUpdate, { by, tag: tag.name, channel: 'prod' });
  const text = formatPairs([
    ['tag', `${tag.name} -> ${tag.version}`],
    ['test', `${tag.name} promoted, test result passed`],
    ['prod', `${prod.tag} (${prod.version}) promoted by ${prod.by}`],
  ]);
  return { summary: { tag: tag.name, prod }, text };
}

/** The demo image's build for a second arch, on that arch's builder: checked to be that arch's, by record and content. */
async function followSecondArch(client: Client, build: DemoBuild, arch: Arch) {
  const { summary: version, text } = await followDemoBuild(client, build);
  const packages = await packageArches(version.manifests.packages.path);
  checkSecondArchVersion(version, arch, packages);
  return {
    summary: { ...version, packageArches: packages },
    text: `${text}\n${'packages'.padEnd(8)}  ${formatPackageArches(packages)}`,
  };
}

function mapStep(client: Client, run: Run, site: DemoSite, stamp: string): Step {
  return {
    title: `map the prod version from ${site.nas} to ${site.compute}, read it there${site.other ? ` and not on ${site.other}` : ''}`,
    run: () => mapAcrossHosts(client, run, site, `${DEMO_IMAGE}@prod`, `demo-vm-${stamp}`),
  };
}

/** The demo's steps in order: on this host's in-process workers, or with `site` on a site's hosts. */
export function demoSteps(
  client: Client,
  config: Config,
  o: { run: Run; logger: Logger; stamp: string; sizeMiB: number; site?: DemoSite; secondArch?: Arch },
): Step[] {
  const { run, logger, stamp, sizeMiB, site, secondArch } = o;
  let version: VersionRecord | undefined;
  let second: DemoBuild | undefined;
  return [
    ...(site
      ? []
      : [
          {
            title: 'storage pipeline across builder and NAS queues',
            run: () => storagePipeline(client, config, stamp, sizeMiB),
          },
        ]),
    {
      title: `build ${DEMO_IMAGE} (debootstrap minbase bookworm) into a new version${site ? ` on builder-0, stored on ${site.nas}` : ''}`,
      run: async () => {
        // The second arch's build is asked for first and runs on its own builder meanwhile; the next step follows it.
        if (secondArch) second = await requestDemoBuild(client, config.host, secondArch);
        const built = await followDemoBuild(
          client,
          await requestDemoBuild(client, site?.nas ?? config.host, machineArch()),
        );
        version = built.summary;
        return built;
      },
    },
    ...(secondArch
      ? [
          {
            title: `build it for ${secondArch} too, on ${queues.builder(secondArch)} alongside the first, into a version of ${demoImage(secondArch)}`,
            run: () => followSecondArch(client, second!, secondArch),
          },
        ]
      : []),
    { title: 'tag it, test it, promote it through test to prod', run: () => promote(client, version!) },
    ...(site ? [mapStep(client, run, site, stamp)] : []),
    {
      title: `subscribe to a signed image list served here, sync it${site ? ` on ${site.cloud.site}` : ''}, then sync its next version`,
      run: () => demoSubscription(client, config, run, site?.cloud),
    },
    ...(site
      ? []
      : [
          {
            title: `push the prod version, signed, to a registry started here; a second site (${DEMO_OCI_SITE}) subscribed to it registers it verified`,
            run: () => demoOciSites(client, config, logger),
          },
          {
            title: `map the prod version to a volume, revoke the version, and show the fleet`,
            run: () => demoRevocation(client, config, version!, stamp),
          },
        ]),
  ];
}
