/**
 * The demo's image-list subscription: this process plays an endorsing site that publishes a signed
 * HEPiX list on 127.0.0.1, and a cloud site subscribed to it with the built-in catalog. The list is
 * synced, then a new version with a changed image is published and synced again: the old image is
 * parked as `<id>_EXPIRED_<time>` and the new one takes its name with the access the site gave it.
 *
 * Run after run the same subscription is kept: its list is served again on the same port (a new
 * subscription replaces it when that port is taken), republished at the version last applied (so
 * the first sync finds nothing to do), then one version on with the other disk.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { TEMPLATE, type ImageRegistry, type RegistryImage } from '../activities/cloud/registry/types.js';
import { cloudRegistry } from '../activities/cloud/registry/configured.js';
import type { ImageList } from '../activities/cloud/imagelist.js';
import { ensureEndorsement, fileDigest, signImageList, type Endorsement } from '../activities/cloud/publish.js';
import type { Run } from '../activities/runner.js';
import { registrySettings, type Config } from '../lib/config.js';
import { serveFiles, type FileServer } from '../lib/file-server.js';
import { exists, partialPath } from '../lib/files.js';
import {
  subscriptionScheduleId,
  type Appliance,
  type SubscriptionConfig,
  type SubscriptionView,
  type SyncOutcome,
} from '../workflows/subscription/messages.js';
import {
  describeSubscription,
  formatAppliances,
  formatOutcome,
  startSubscription,
  stopSubscription,
  subscriptionAppliances,
  subscriptionFromOptions,
  syncFailed,
  syncSubscription,
} from './subscription-client.js';
import { say } from './context.js';
import { formatPairs, formatTable } from './output.js';

export const DEMO_SUBSCRIPTION = 'imgflow-demo';
export const DEMO_APPLIANCE = 'demo-appliance';
const LIST_PATH = `/${DEMO_SUBSCRIPTION}.smime`;
const NAMES = {
  ca: '/C=XX/O=imgflow demo/CN=imgflow Demo CA',
  endorser: '/C=XX/O=imgflow demo/OU=endorsers/CN=imgflow Demo Endorser',
};
/** What a site's cloud admin gives its users once an image is in: use by everyone. */
const SHARED_MODE = '644';
const DISKS = [
  { file: 'appliance-a.qcow2', size: '64M' },
  { file: 'appliance-b.qcow2', size: '96M' },
];

interface Published {
  version: number;
  disk: string;
}

/** The two small qcow2 disks the list alternates between; made once. */
async function ensureDisks(run: Run, dir: string): Promise<string[]> {
  await fs.mkdir(dir, { recursive: true });
  return Promise.all(
    DISKS.map(async ({ file, size }) => {
      const disk = path.join(dir, file);
      if (await exists(disk)) return disk;
      const partial = partialPath(disk);
      await run(['qemu-img', 'create', '-q', '-f', 'qcow2', partial, size]);
      await fs.rename(partial, disk);
      return disk;
    }),
  );
}

/** Signs list `version`, whose one image is disk `version % 2`, and serves it with that disk. */
async function publish(
  run: Run,
  server: FileServer,
  endorsement: Endorsement,
  dir: string,
  disks: string[],
  version: number,
): Promise<Published> {
  const disk = disks[version % disks.length]!;
  const imagePath = `/${path.basename(disk)}`;
  server.publish(imagePath, disk);
  const now = Date.now();
  const list: ImageList = {
    identifier: DEMO_SUBSCRIPTION,
    title: 'imgflow demo site',
    description: 'The images an imgflow demo endorses',
    source: server.url('/'),
    version: String(version),
    uri: server.url(LIST_PATH),
    created: new Date(now - 60_000).toISOString(),
    expires: new Date(now + 30 * 86_400_000).toISOString(),
    endorser: {
      dn: endorsement.endorser.dn,
      ca: endorsement.endorser.caDn,
      email: 'endorser@imgflow.invalid',
      creator: 'imgflow demo',
    },
    images: [
      {
        identifier: DEMO_APPLIANCE,
        title: 'imgflow demo appliance',
        description: `An empty qcow2 disk, as list version ${version} has it`,
        ...(await fileDigest(disk)),
        uri: server.url(imagePath),
        version: String(version),
        hypervisor: 'QEMU,KVM',
        format: 'qcow2',
        arch: 'x86_64',
        os: 'Linux',
        osVersion: 'demo',
        comments: '',
      },
    ],
  };
  const signed = path.join(dir, `${DEMO_SUBSCRIPTION}.smime`);
  await signImageList(run, list, endorsement.endorser, signed);
  server.publish(LIST_PATH, signed);
  return { version, disk };
}

/** Serves on the address and port the subscription already knows, or on a new port when that one is taken. */
async function serveAgain(url: string | undefined, host: string): Promise<FileServer> {
  if (url === undefined || new URL(url).hostname !== host) return serveFiles(0, host);
  return serveFiles(Number(new URL(url).port), host).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EADDRINUSE') throw error;
    return serveFiles(0, host);
  });
}

/** The demo's subscription to `url`: the one already there, or a new one (replacing one elsewhere). */
async function ensureSubscription(
  client: Client,
  site: string,
  prior: SubscriptionView | undefined,
  url: string,
  caDir: string,
): Promise<{ lastApplied: number; subscribed: boolean }> {
  const lastApplied = Number(prior?.lastAppliedVersion ?? 0);
  if (prior?.config.url === url) return { lastApplied, subscribed: false };
  if (prior) {
    say(`  the demo list moved to ${url}: subscription ${DEMO_SUBSCRIPTION} is made again`);
    await stopSubscription(client, DEMO_SUBSCRIPTION);
  }
  const subscription: SubscriptionConfig = subscriptionFromOptions(
    url,
    {
      endorserDn: NAMES.endorser,
      endorserCa: NAMES.ca,
      caDir,
      every: '1d',
      newImages: 'accept',
      registry: 'catalog',
      format: 'qcow2',
      identifier: DEMO_SUBSCRIPTION,
      name: DEMO_SUBSCRIPTION,
    },
    site,
  );
  await startSubscription(client, subscription);
  // The list server lives only as long as a demo: scheduled syncs would find nobody serving it.
  await client.schedule
    .getHandle(subscriptionScheduleId(DEMO_SUBSCRIPTION))
    .pause('the demo list is served only while imgflow demo runs');
  return { lastApplied, subscribed: true };
}

async function syncOrFail(client: Client): Promise<SyncOutcome> {
  const outcome = await syncSubscription(client, DEMO_SUBSCRIPTION);
  if (syncFailed(outcome))
    throw new Error(`sync of ${DEMO_SUBSCRIPTION} ended ${outcome.status}:\n${formatOutcome(outcome)}`);
  return outcome;
}

/** The registry's current image for the appliance and the predecessor parked last (names sort by time). */
async function registryView(registry: ImageRegistry): Promise<{ current?: RegistryImage; parked?: RegistryImage }> {
  const images = await registry.list({ imageList: DEMO_SUBSCRIPTION });
  const parked = images
    .filter((i) => i.name.startsWith(`${DEMO_APPLIANCE}_EXPIRED_`))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { current: images.find((i) => i.name === DEMO_APPLIANCE), parked: parked.at(-1) };
}

function row(image: RegistryImage | undefined): RegistryRow | undefined {
  return (
    image && {
      id: image.id,
      name: image.name,
      state: image.state,
      owner: `${image.ownerId}:${image.groupId}`,
      mode: image.mode,
      version: image.template[TEMPLATE.version],
    }
  );
}

/** The site opens a newly registered (locked) image to its users, as a cloud admin would. */
async function share(registry: ImageRegistry, image: RegistryImage | undefined): Promise<void> {
  if (image && image.mode !== SHARED_MODE) await registry.chmod(image.id, SHARED_MODE);
}

function registryTable(rows: (RegistryRow | undefined)[]): string {
  return formatTable(
    rows.filter((r) => r !== undefined),
    ['id', 'name', 'state', 'owner', 'mode', 'version'],
  );
}

/** A registry image as the demo shows it. */
export type RegistryRow = { id: number; name: string; state: string; owner: string; mode: string; version?: string };

export interface DemoSubscriptionSummary {
  subscription: string;
  url: string;
  subscribed: boolean;
  syncs: SyncOutcome[];
  appliances: Appliance[];
  registry: { current?: RegistryRow; parked?: RegistryRow };
}

/** Where the subscription runs: the cloud site syncing it, its registry, the address the list is served on. */
export interface CloudPlace {
  site: string;
  registry: ImageRegistry;
  listen: string;
}

export async function demoSubscription(
  client: Client,
  config: Config,
  run: Run,
  place: CloudPlace = { site: config.site, registry: cloudRegistry(config, registrySettings()), listen: '127.0.0.1' },
): Promise<{ summary: DemoSubscriptionSummary; text: string }> {
  const dir = path.join(config.home, 'demo', 'imagelist');
  const endorsement = await ensureEndorsement(run, path.join(dir, 'pki'), NAMES);
  const disks = await ensureDisks(run, path.join(dir, 'disks'));
  const prior = await describeSubscription(client, DEMO_SUBSCRIPTION);
  const server = await serveAgain(prior?.config.url, place.listen);
  const registry = place.registry;
  try {
    const url = server.url(LIST_PATH);
    const { lastApplied, subscribed } = await ensureSubscription(client, place.site, prior, url, endorsement.caDir);
    const first = await publish(run, server, endorsement, dir, disks, Math.max(lastApplied, 1));
    const sync1 = await syncOrFail(client);
    const before = await subscriptionAppliances(client, DEMO_SUBSCRIPTION);
    await share(registry, (await registryView(registry)).current);

    await publish(run, server, endorsement, dir, disks, first.version + 1);
    const sync2 = await syncOrFail(client);
    const appliances = await subscriptionAppliances(client, DEMO_SUBSCRIPTION);
    const view = await registryView(registry);
    const current = row(view.current);
    const parked = row(view.parked);
    const text = [
      formatPairs([
        ['list', `${url} (${subscribed ? 'subscribed now' : 'subscribed before'}, signed by ${NAMES.endorser})`],
        [`sync of list ${sync1.listVersion}`, syncSummary(sync1)],
      ]),
      formatAppliances(before),
      formatPairs([[`sync of list ${sync2.listVersion}`, syncSummary(sync2)]]),
      formatAppliances(appliances),
      'registry (the swap re-applied the access the site gave the old image):',
      registryTable([current, parked]),
    ].join('\n');
    return {
      summary: {
        subscription: DEMO_SUBSCRIPTION,
        url,
        subscribed,
        syncs: [sync1, sync2],
        appliances,
        registry: { current, parked },
      },
      text,
    };
  } finally {
    await server.close();
  }
}

/** A sync in one line: what it added, updated and expired, or that it had nothing to do. */
export function syncSummary(outcome: SyncOutcome): string {
  const report = outcome.report!;
  const parts = [
    ...report.add.map((i) => `added ${i}`),
    ...(outcome.outcomes ?? [])
      .filter((o) => o.action === 'update' || o.action === 'metadata')
      .map((o) => `updated ${o.identifier} (${o.note ?? ''})`),
    ...report.expire.map((e) => `expired ${e.from}`),
  ];
  return `${outcome.status}: ${parts.join('; ') || `nothing to do, ${report.unchanged.length} unchanged`}`;
}
