/**
 * The demo's two sites through an OCI registry: this process starts the reference registry
 * (docker-registry, TLS and basic auth) on loopback for the length of the step, its state under
 * the demo's; this site pushes the prod version of the demo image there under the tag `prod`,
 * signed with a key made once, and pushes it again (nothing uploaded); a second site, with a state
 * directory and a cloud worker of its own, subscribed to the repository with the public key, syncs
 * it: the tag is registered in that site's catalog with its signature verified.
 *
 * Run after run the registry keeps its storage, certificate and credentials and is started on the
 * port the subscription knows (a new subscription replaces it when that port is taken); each run
 * built a new prod version, so the tag moves: the push uploads the new disk, and the second site's
 * sync swaps the image in, the previous one parked.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { generateSigningKey } from '../activities/oci/cosign.js';
import { TEMPLATE, type RegistryImage } from '../activities/cloud/registry/types.js';
import { cloudRegistry } from '../activities/cloud/registry/configured.js';
import { machineArch, registrySettings, type Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { loopbackPortFree, startRegistryServer, type RegistryServer } from '../lib/registry-server.js';
import { subscriptionScheduleId, type SyncOutcome } from '../workflows/subscription/messages.js';
import type { PushResult } from '../workflows/push/messages.js';
import { say } from './context.js';
import { DEMO_IMAGE } from './demo-recipe.js';
import { syncSummary } from './demo-subscription.js';
import { startLocalWorkers } from './local-workers.js';
import { formatPairs, formatTable, humanBytes } from './output.js';
import { pushVersion } from './push-client.js';
import {
  describeSubscription,
  formatOutcome,
  startSubscription,
  stopSubscription,
  subscriptionFromOptions,
  syncFailed,
  syncSubscription,
} from './subscription-client.js';

export const DEMO_OCI_SUBSCRIPTION = 'imgflow-demo-oci';
/** The second site: its cloud worker polls `cloud.<this>`. */
export const DEMO_OCI_SITE = 'demo-site-b';
export const DEMO_OCI_REPOSITORY = `demo/${DEMO_IMAGE}`;
export const DEMO_OCI_TAG = 'prod';

/** The key pair this site signs its pushes with, made once: only the public half goes to the other site. */
function ensureSigningKey(dir: string): { key: string; pub: string } {
  const files = { key: path.join(dir, 'site.key'), pub: path.join(dir, 'site.pub') };
  if (fs.existsSync(files.key) && fs.existsSync(files.pub)) return files;
  const pair = generateSigningKey();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [file, pem, mode] of [
    [files.key, pair.privatePem, 0o600],
    [files.pub, pair.publicPem, 0o644],
  ] as const) {
    fs.writeFileSync(`${file}.partial`, pem, { mode });
    fs.renameSync(`${file}.partial`, file);
  }
  return files;
}

/** The registry on the port the subscription already knows, or on a free one when that is taken. */
async function startRegistry(dir: string, url: string | undefined): Promise<RegistryServer> {
  const port = url === undefined ? undefined : Number(/^oci:\/\/127\.0\.0\.1:(\d+)\//.exec(url)?.[1] ?? NaN);
  const usable = port !== undefined && Number.isInteger(port) && (await loopbackPortFree(port));
  return startRegistryServer(dir, { validityDays: 825, realm: 'imgflow-demo', ...(usable ? { port } : {}) });
}

export interface DemoOciImage {
  id: number;
  name: string;
  state: string;
  version?: string;
  uri?: string;
  comments?: string;
}

export interface DemoOciSummary {
  registry: string;
  push: PushResult;
  again: PushResult;
  site: string;
  siteHome: string;
  subscription: string;
  url: string;
  subscribed: boolean;
  sync: SyncOutcome;
  images: DemoOciImage[];
  seconds: number;
}

const blobs = (n: number) => `${n} blob${n === 1 ? '' : 's'}`;

function imageRow(image: RegistryImage): DemoOciImage {
  const t = image.template;
  return {
    id: image.id,
    name: image.name,
    state: image.state,
    ...(t[TEMPLATE.version] !== undefined ? { version: t[TEMPLATE.version] } : {}),
    ...(t[TEMPLATE.uri] !== undefined ? { uri: t[TEMPLATE.uri] } : {}),
    ...(t.IMGFLOW_COMMENTS !== undefined ? { comments: t.IMGFLOW_COMMENTS } : {}),
  };
}

export async function demoOciSites(
  client: Client,
  config: Config,
  logger: Logger,
): Promise<{ summary: DemoOciSummary; text: string }> {
  const started = Date.now();
  const dir = path.join(config.home, 'demo', 'oci');
  const keys = ensureSigningKey(path.join(dir, 'keys'));
  const siteB: Config = { ...config, home: path.join(dir, 'site-b'), site: DEMO_OCI_SITE };
  const prior = await describeSubscription(client, DEMO_OCI_SUBSCRIPTION);
  const registry = await startRegistry(path.join(dir, 'registry'), prior?.config.url);
  let workers: Awaited<ReturnType<typeof startLocalWorkers>> | undefined;
  try {
    const access = { credentialsFile: registry.credentialsFile, caFile: registry.caFile };
    const request = {
      image: `${DEMO_IMAGE}@prod`,
      to: `${registry.address}/${DEMO_OCI_REPOSITORY}:${DEMO_OCI_TAG}`,
      signingKeyFile: keys.key,
      access,
    };
    const push = await pushVersion(client, request);
    const again = await pushVersion(client, request);

    // The second site: a state directory and a cloud worker of its own, given the public key only.
    workers = await startLocalWorkers(siteB, ['cloud'], logger);
    const url = `oci://${registry.address}/${DEMO_OCI_REPOSITORY}`;
    const subscribed = prior?.config.url !== url;
    if (subscribed) {
      if (prior) {
        say(`  the demo registry moved to ${registry.address}: subscription ${DEMO_OCI_SUBSCRIPTION} is made again`);
        await stopSubscription(client, DEMO_OCI_SUBSCRIPTION);
      }
      await startSubscription(
        client,
        subscriptionFromOptions(
          url,
          {
            key: keys.pub,
            arch: machineArch(),
            ...access,
            every: '1d',
            newImages: 'accept',
            registry: 'catalog',
            format: 'qcow2',
            name: DEMO_OCI_SUBSCRIPTION,
            site: DEMO_OCI_SITE,
          },
          DEMO_OCI_SITE,
        ),
      );
      // The registry runs only while a demo does: scheduled syncs would find nobody there.
      await client.schedule
        .getHandle(subscriptionScheduleId(DEMO_OCI_SUBSCRIPTION))
        .pause('the demo registry runs only while imgflow demo does');
    }
    const sync = await syncSubscription(client, DEMO_OCI_SUBSCRIPTION);
    if (syncFailed(sync))
      throw new Error(`sync of ${DEMO_OCI_SUBSCRIPTION} ended ${sync.status}:\n${formatOutcome(sync)}`);
    const catalog = cloudRegistry(siteB, registrySettings());
    const images = (await catalog.list())
      .filter((i) => i.template[TEMPLATE.subscription] === DEMO_OCI_SUBSCRIPTION)
      .map(imageRow);
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    const text = [
      formatPairs([
        ['registry', `${registry.address} (docker-registry, TLS and basic auth, state in ${registry.dir})`],
        [
          'push',
          `${push.reference}: ${blobs(push.uploadedBlobs)} (${humanBytes(push.uploadedBytes)}) uploaded, ${push.signed ? `signed with ${keys.key}` : 'signature already there'}`,
        ],
        [
          'push again',
          `${blobs(again.uploadedBlobs)} uploaded, manifest ${again.manifestPut ? 'put' : 'in place'}, ${again.signed ? 'signed again' : 'signature already there'}`,
        ],
        [
          'second site',
          `${DEMO_OCI_SITE} (state ${siteB.home}, its own cloud worker) ${subscribed ? 'subscribed now' : 'subscribed before'} to ${url} with ${keys.pub}`,
        ],
        [`sync`, syncSummary(sync)],
        ['took', `${seconds} s`],
      ]),
      `catalog of ${DEMO_OCI_SITE}:`,
      formatTable(
        images.map((i) => ({ ...i })),
        ['id', 'name', 'state', 'version', 'comments'],
      ),
    ].join('\n');
    return {
      summary: {
        registry: registry.address,
        push,
        again,
        site: DEMO_OCI_SITE,
        siteHome: siteB.home,
        subscription: DEMO_OCI_SUBSCRIPTION,
        url,
        subscribed,
        sync,
        images,
        seconds,
      },
      text,
    };
  } finally {
    await workers?.stop();
    await registry.stop();
  }
}
