/**
 * Sync of a signed image list of N small images (default 200) served on 127.0.0.1, into the
 * built-in catalog: the first sync registers all of them, then a new list version changes M of
 * them (default 3). Prints the wall time of each sync and the downloads the server answered,
 * which for the second sync must be M: unchanged images are neither fetched nor touched.
 *
 *   npm run bench -- bench/subscription-sync.ts [N] [M]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ImageList, ListedImage } from '../activities/cloud/imagelist.js';
import { ensureEndorsement, fileDigest, signImageList } from '../activities/cloud/publish.js';
import { createRunner } from '../activities/runner.js';
import { checkInt } from '../common/names.js';
import { loadConfig } from '../lib/config.js';
import { serveFiles } from '../lib/file-server.js';
import { createLogger } from '../lib/logger.js';
import {
  startSubscription,
  stopSubscription,
  subscriptionFromOptions,
  syncSubscription,
} from '../starters/subscription-client.js';
import { ensureClient } from '../starters/client.js';
import { startLocalWorkers } from '../starters/local-workers.js';

const count = checkInt('N', process.argv[2] ?? '200', 1, 10_000);
const changed = checkInt('M', process.argv[3] ?? '3', 0, count);
const NAMES = {
  ca: '/C=XX/O=imgflow bench/CN=imgflow Bench CA',
  endorser: '/C=XX/O=imgflow bench/CN=imgflow Bench Endorser',
};

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'imgflow-bench-sync-'));
const logger = createLogger('bench', 'error');
const run = createRunner(logger);
const stamp = Date.now().toString(36);
const name = `bench-sync-${stamp}`;
// Workers with their own home (an empty download cache and catalog) and cloud site; the server is the usual one.
const workerConfig = loadConfig({ home: path.join(dir, 'home'), site: name });
const { client, connection } = await ensureClient(loadConfig());
const server = await serveFiles();
const local = await startLocalWorkers(workerConfig, ['orchestrator', 'cloud', 'control'], logger);

/** A qcow2 of `i + 1` MiB virtual size (distinct bytes per image), or of `bigger` MiB more once changed. */
async function disk(i: number, generation: number): Promise<string> {
  const file = path.join(dir, 'disks', `image-${i}-${generation}.qcow2`);
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, `${i + 1 + generation * count}M`]);
  server.publish(`/${path.basename(file)}`, file);
  return file;
}

async function entry(i: number, generation: number): Promise<ListedImage> {
  const file = await disk(i, generation);
  return {
    identifier: `image-${i}`,
    title: `Image ${i}`,
    description: `bench image ${i}`,
    ...(await fileDigest(file)),
    uri: server.url(`/${path.basename(file)}`),
    version: String(generation + 1),
    hypervisor: 'QEMU,KVM',
    format: 'qcow2',
    arch: 'x86_64',
    os: 'Linux',
    osVersion: 'bench',
    comments: '',
  };
}

async function publish(version: number, images: ListedImage[]): Promise<void> {
  const now = Date.now();
  const list: ImageList = {
    identifier: name,
    title: 'bench',
    description: `${count} images`,
    source: server.url('/'),
    version: String(version),
    uri: server.url('/list.smime'),
    created: new Date(now - 60_000).toISOString(),
    expires: new Date(now + 86_400_000).toISOString(),
    endorser: { dn: NAMES.endorser, ca: NAMES.ca, email: 'bench@imgflow.invalid', creator: 'imgflow bench' },
    images,
  };
  const signed = path.join(dir, 'list.smime');
  await signImageList(run, list, endorsement.endorser, signed);
  server.publish('/list.smime', signed);
}

/** Runs a sync; returns its wall time and the image downloads the server answered meanwhile. */
async function timedSync(): Promise<{ seconds: number; downloads: number; status: string }> {
  const before = server.requests.length;
  const t = performance.now();
  const outcome = await syncSubscription(client, name);
  const seconds = (performance.now() - t) / 1000;
  const downloads = server.requests.slice(before).filter((r) => r.path !== '/list.smime' && r.status === 200).length;
  return { seconds, downloads, status: outcome.status };
}

const endorsement = await ensureEndorsement(run, path.join(dir, 'pki'), NAMES);
let exitCode = 0;
try {
  await fs.mkdir(path.join(dir, 'disks'));
  const images: ListedImage[] = [];
  for (let i = 0; i < count; i++) images.push(await entry(i, 0));
  await publish(1, images);
  const subscription = subscriptionFromOptions(
    server.url('/list.smime'),
    {
      endorserDn: NAMES.endorser,
      endorserCa: NAMES.ca,
      caDir: endorsement.caDir,
      every: '1d',
      newImages: 'accept',
      registry: 'catalog',
      format: 'qcow2',
      name,
    },
    name,
  );
  await startSubscription(client, subscription);
  const first = await timedSync();

  // M images spread over the list get new bytes.
  const changedAt = Array.from({ length: changed }, (_, k) => Math.floor(((k + 0.5) * count) / changed));
  for (const i of changedAt) images[i] = await entry(i, 1);
  await publish(2, images);
  const second = await timedSync();
  await stopSubscription(client, name);

  const fmt = (s: number) => `${s.toFixed(1).padStart(6)} s`;
  console.log(`subscription sync of a ${count}-image list into the catalog, local HTTP`);
  console.log(
    `first sync (${count} new)         ${fmt(first.seconds)}  downloads ${String(first.downloads).padStart(4)}  ${first.status}`,
  );
  console.log(
    `second sync (${changed} changed)      ${fmt(second.seconds)}  downloads ${String(second.downloads).padStart(4)}  ${second.status}`,
  );
  if (
    first.downloads !== count ||
    second.downloads !== changed ||
    first.status !== 'applied' ||
    second.status !== 'applied'
  ) {
    console.log(`expected ${count} then ${changed} downloads, both syncs applied`);
    exitCode = 1;
  }
} finally {
  await local.stop();
  await connection.close();
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
}
process.exit(exitCode);
