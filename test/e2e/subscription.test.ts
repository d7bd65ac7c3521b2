/**
 * Image-list subscriptions on a real server, with real openssl signatures, downloads and qemu-img:
 * a full cycle into the catalog (first images private, an update swapping with access re-applied,
 * a metadata-only change updated in place, a replayed list refused, an expired list expiring its
 * images and deleting them once unused), staged images and their adoption, OpenNebula (a swap that
 * fails and is undone, metadata in place, expiry waiting for the VM), and every bad input of the
 * issue's list through a real sync, table-driven.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Client, Connection, WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCloudActivities } from '../../activities/cloud/index.js';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { OpenNebulaRegistry } from '../../activities/cloud/registry/opennebula.js';
import type { ImageRegistry } from '../../activities/cloud/registry/types.js';
import { createRunner } from '../../activities/runner.js';
import { CONTROL_QUEUE, queues } from '../../common/queues.js';
import {
  adoptUpdate,
  appliancesQuery,
  describeQuery,
  historyQuery,
  syncUpdate,
  unsubscribeUpdate,
  type SubscriptionConfig,
} from '../../workflows/subscription/messages.js';
import { subscriptionTickWorkflow } from '../../workflows/subscription/tick-workflow.js';
import { subscriptionWorkflow } from '../../workflows/subscription/workflow.js';
import { progressStep } from '../../starters/output.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { digestOf, listDocument, patternedQcow2 } from '../support/imagelists.js';
import { startFileServer, type FileServer, type ServeMode } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';
import { OpenNebulaContract, STATE } from '../support/opennebula-contract.js';
import { createPki, type Identity, type Pki } from '../support/pki.js';
import { decodePayload, eventCount, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const PARKED = /^img-a_EXPIRED_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$/;

interface ImageSpec {
  id: string;
  version: string;
  body: Buffer;
  /** The hv:format the list declares (qcow2 by default). */
  format?: string;
  description?: string;
  /** Lie about the digest or the size, as a tampered or broken list would. */
  sha512?: string;
  size?: number;
  /** How the file server misbehaves for this image. */
  serve?: ServeMode;
}

type Json = Record<string, unknown>;

interface ListSpec {
  identifier: string;
  version: string;
  images: ImageSpec[];
  signer?: Identity;
  /** The endorser the list names (default: the signer). */
  names?: Identity;
  createdMs?: number;
  expiresMs?: number;
  /** Changes the list document before it is signed. */
  edit?: (list: Json) => void;
  /** Signs this text instead of the list. */
  body?: string;
  /** Serves the list unsigned. */
  unsigned?: boolean;
  /** Changes the signed file after signing. */
  tamper?: boolean;
}

const makeQcow2 = (file: string, pattern: string) => patternedQcow2(file, pattern, { virtual: '4M', written: '64k' });

/** An OVA (a tar) that holds its descriptor and these small vmdk disks (none by default). */
function makeOva(dir: string, disks: string[] = []): Buffer {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'appliance.ovf'), '<?xml version="1.0"?><Envelope/>');
  for (const disk of disks) execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', path.join(dir, disk), '1M']);
  execFileSync('tar', ['-cf', path.join(dir, 'appliance.ova'), '-C', dir, 'appliance.ovf', ...disks]);
  return fs.readFileSync(path.join(dir, 'appliance.ova'));
}

describe('image-list subscriptions', () => {
  requireTools('openssl', 'qemu-img', 'qemu-io');
  const dir = tempDir();
  let pki: Pki;
  let server: FileServer;
  const disks: Record<string, Buffer> = {};
  let signed = 0;

  /** Signs the list and serves it at /<identifier>.smime with its images. */
  function publish(spec: ListSpec, to: FileServer = server): string {
    const signer = spec.signer ?? pki.endorser;
    const names = spec.names ?? signer;
    const images = spec.images.map((image) => {
      const file = `/${image.id}-${image.version}.qcow2`;
      to.setFile(file, image.body, image.serve);
      const { size, sha512 } = digestOf(image.body);
      return {
        identifier: image.id,
        ...(image.description ? { description: image.description } : {}),
        ...(image.format ? { format: image.format } : {}),
        size: image.size ?? size,
        sha512: image.sha512 ?? sha512,
        uri: to.url(file),
        version: image.version,
      };
    });
    const now = Date.now();
    const list = JSON.parse(
      listDocument(
        {
          identifier: spec.identifier,
          version: spec.version,
          source: to.url('/'),
          uri: to.url(`/${spec.identifier}.smime`),
          created: new Date(now + (spec.createdMs ?? -60_000)).toISOString(),
          expires: new Date(now + (spec.expiresMs ?? 86_400_000)).toISOString(),
          endorser: names,
        },
        images,
      ),
    ) as { 'hv:imagelist': Json };
    spec.edit?.(list['hv:imagelist']);
    const text = spec.body ?? JSON.stringify(list);
    const served = spec.unsigned ? text : fs.readFileSync(pki.sign(text, signer, `list-${signed++}`), 'utf8');
    to.setFile(`/${spec.identifier}.smime`, spec.tamper ? served.replace('Site images', 'Evil images') : served);
    return to.url(`/${spec.identifier}.smime`);
  }

  function subscription(
    name: string,
    url: string,
    site: string,
    extra: Partial<SubscriptionConfig> = {},
  ): SubscriptionConfig {
    return {
      name,
      url,
      endorser: { dn: pki.endorser.dn, ca: pki.endorser.caDn },
      caDir: pki.caDir,
      every: '6h',
      newImages: 'accept',
      registry: 'catalog',
      format: 'qcow2',
      stage: false,
      site,
      workerWaitSeconds: 30,
      ...extra,
    };
  }

  /** Cloud activities for one site, on its queue and on control, against `registry`. */
  function cloudWorkers(site: string, registry: ImageRegistry) {
    const acts = createCloudActivities({
      run: createRunner(memoryLogger().logger),
      config: { home: path.join(dir, `home-${site}`), site },
      registry,
      trust: { caDir: pki.caDir },
      download: { retryDelayMs: 10, stallTimeoutMs: 3000, retries: 1 },
    });
    return { [queues.cloud(site)]: acts, [CONTROL_QUEUE]: acts };
  }

  const byName = async (registry: ImageRegistry, listId: string) => {
    const images = await registry.list({ imageList: listId });
    return {
      current: (name: string) => images.find((i) => i.name === name),
      parked: images.filter((i) => i.name.includes('_EXPIRED_')),
      all: images,
    };
  };

  beforeAll(async () => {
    pki = createPki(path.join(dir, 'pki'));
    server = await startFileServer();
    disks.a1 = makeQcow2(path.join(dir, 'a1.qcow2'), '0x11');
    disks.a2 = makeQcow2(path.join(dir, 'a2.qcow2'), '0x22');
    disks.b1 = makeQcow2(path.join(dir, 'b1.qcow2'), '0x33');
  });
  afterAll(() => server.close());

  it('runs a full cycle: first images private, update with access re-applied, metadata change, replay refused, expiry', async () => {
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const v1 = {
      identifier: listId,
      version: '1',
      images: [
        { id: 'img-a', version: '1.0', body: disks.a1! },
        { id: 'img-b', version: '1.0', body: disks.b1! },
      ],
    };
    const url = publish(v1);
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${site}`,
        args: [{ config: subscription(site, url, site) }],
      });

      // First sync: both images registered, private to the admin.
      const first = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(first).toMatchObject({ status: 'applied', listVersion: '1', report: { add: ['img-a', 'img-b'] } });
      let reg = await byName(catalog, listId);
      for (const name of ['img-a', 'img-b'])
        expect(reg.current(name)).toMatchObject({ state: 'READY', ownerId: 0, groupId: 0, mode: '700' });
      expect((await handle.query(describeQuery)).config.identifier).toBe(listId); // fixed by the first verified list

      // The site opens img-a to a group and keeps img-b disabled: a swap must carry both over.
      const oldA = reg.current('img-a')!;
      const oldB = reg.current('img-b')!;
      await catalog.chown(oldA.id, { userId: 7, groupId: 70 });
      await catalog.chmod(oldA.id, '644');
      await catalog.chmod(oldB.id, '640');
      await catalog.setEnabled(oldB.id, false);
      const requestsBefore = server.requests.length;

      // Version 2: new bytes for img-a, a new description only for img-b.
      publish({
        identifier: listId,
        version: '2',
        images: [
          { id: 'img-a', version: '2.0', body: disks.a2! },
          { id: 'img-b', version: '1.0', body: disks.b1!, description: 'now with a better description' },
        ],
      });
      const second = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(second).toMatchObject({
        status: 'applied',
        listVersion: '2',
        report: { update: ['img-a'], metadata: ['img-b'] },
      });
      expect(second.outcomes?.find((o) => o.identifier === 'img-b')).toMatchObject({
        action: 'metadata',
        ok: true,
        registryId: oldB.id,
        note: 'metadata updated in place: DESCRIPTION',
      });
      reg = await byName(catalog, listId);
      expect(reg.current('img-a')).toMatchObject({
        state: 'READY',
        ownerId: 7,
        groupId: 70,
        mode: '644',
        template: { IMGFLOW_VERSION: '2.0' },
      });
      expect(reg.current('img-a')!.id).not.toBe(oldA.id);
      expect(await catalog.info(oldA.id)).toMatchObject({
        name: expect.stringMatching(PARKED),
        state: 'DISABLED',
        ownerId: 0,
        groupId: 0,
        mode: '700',
      });
      // img-b's new description is attached in place: the same image, its access and state as the site left them.
      expect(reg.current('img-b')).toEqual({
        ...oldB,
        state: 'DISABLED',
        mode: '640',
        template: { ...oldB.template, DESCRIPTION: 'now with a better description' },
      });
      expect(reg.parked.map((i) => i.id)).toEqual([oldA.id]);
      execFileSync(
        'qemu-io',
        ['-f', 'qcow2', '-c', 'read -P 0x22 0 64k', await catalog.diskPath(reg.current('img-a')!.id)],
        { stdio: 'ignore' },
      );
      // Only the changed image was downloaded; the metadata change needed no download.
      const fetched = server.requests.slice(requestsBefore).map((r) => r.path);
      expect(fetched.filter((p) => p.endsWith('.qcow2'))).toEqual(['/img-a-2.0.qcow2']);

      const appliances = await handle.query(appliancesQuery);
      expect(appliances.map((a) => [a.identifier, a.state, a.listVersion, a.imageVersion, a.registryName])).toEqual([
        ['img-a', 'updated', '2', '2.0', 'img-a'],
        ['img-b', 'updated', '2', '1.0', 'img-b'],
      ]);

      // A replay of version 1 is refused and changes nothing.
      publish(v1);
      const replay = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(replay).toMatchObject({
        status: 'refused',
        reason: expect.stringMatching(/image list check "version" failed/),
      });
      expect((await byName(catalog, listId)).all).toHaveLength(reg.all.length);

      // Version 3 has expired: img-b goes at once, img-a is in use and stays parked until it is not.
      const newA = reg.current('img-a')!.id;
      await catalog.setRunning(newA, 1);
      publish({ identifier: listId, version: '3', images: v1.images, createdMs: -7_200_000, expiresMs: -3_600_000 });
      const expired = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(expired).toMatchObject({
        status: 'expired',
        reason: expect.stringMatching(/image list check "expires" failed/),
      });
      expect(await catalog.info(newA)).toMatchObject({
        name: expect.stringMatching(PARKED),
        ownerId: 0,
        groupId: 0,
        mode: '700',
        state: 'USED',
      });
      expect((await byName(catalog, listId)).current('img-b')).toBeUndefined();
      expect((await handle.query(describeQuery)).parked.map((p) => p.id)).toEqual([newA]);
      await catalog.setRunning(newA, 0);
      const later = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(later.outcomes?.filter((o) => o.action === 'delete').map((o) => o.registryId)).toEqual([newA]);
      await expect(catalog.info(newA)).rejects.toThrow(/does not exist/);

      // A tick, as the schedule starts it, asks for a sync.
      const runsBefore = (await handle.query(historyQuery, {})).filter((e) => e.op === 'sync').length;
      const tick = await client.workflow.start(subscriptionTickWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `${site}-tick`,
        args: [{ subscription: site }],
      });
      await tick.result();
      await expect
        .poll(async () => (await handle.query(historyQuery, {})).filter((e) => e.op === 'sync').length, {
          timeout: 30_000,
        })
        .toBe(runsBefore + 1);
      await saveHistory('subscriptionTickWorkflow', tick);

      const view = await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
      expect(view.lastAppliedVersion).toBe('3');
      await handle.result();
      // The histories saved before metadata went in place stay too: they pin the patched path.
      await saveHistory('subscriptionWorkflow-cycle', handle);
      await saveHistory('subscriptionSyncWorkflow-metadata', client.workflow.getHandle(`subscription-${site}-sync-2`));
    });
    await connection.close();
  });

  it('leaves an image alone when another list holds its name, naming the holder, and applies the rest', async () => {
    const site = uniqueQueue('site');
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const first = {
      identifier: `first-${site}`,
      version: '1',
      images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
    };
    const second = {
      identifier: `second-${site}`,
      version: '1',
      images: [
        { id: 'img-a', version: '9.0', body: disks.a2! },
        { id: 'img-b', version: '1.0', body: disks.b1! },
      ],
    };
    const subscribe = (name: string, url: string) =>
      client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${name}`,
        args: [{ config: subscription(name, url, site) }],
      });
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const firstHandle = await subscribe(`${site}-first`, publish(first));
      expect(await firstHandle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
        status: 'applied',
        report: { add: ['img-a'] },
      });
      const holder = (await byName(catalog, first.identifier)).current('img-a')!;

      const requestsBefore = server.requests.length;
      const secondHandle = await subscribe(`${site}-second`, publish(second));
      const outcome = await secondHandle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(outcome).toMatchObject({ status: 'partial', report: { add: ['img-b'], taken: ['img-a'] } });
      expect(outcome.outcomes?.find((o) => o.identifier === 'img-a')).toMatchObject({
        ok: false,
        note: `not added: the name img-a is taken by image ${holder.id} of subscription ${site}-first (list ${first.identifier}), which subscription ${site}-second never changes`,
      });
      // The holder is as it was, the taken image was not even downloaded, and the rest was applied.
      expect(await catalog.info(holder.id)).toEqual(holder);
      expect(
        server.requests
          .slice(requestsBefore)
          .map((r) => r.path)
          .filter((p) => p.endsWith('.qcow2')),
      ).toEqual(['/img-b-1.0.qcow2']);
      expect((await byName(catalog, second.identifier)).all.map((i) => i.name)).toEqual(['img-b']);
      const appliances = await secondHandle.query(appliancesQuery);
      expect(appliances.map((a) => [a.identifier, a.state])).toEqual([
        ['img-a', 'failed'],
        ['img-b', 'registered'],
      ]);
      // It counts only what it really registered.
      expect((await secondHandle.query(describeQuery)).images).toBe(1);

      for (const handle of [firstHandle, secondHandle])
        await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
    });
    await connection.close();
  });

  it("never touches another subscription's images when a list reuses their identifier, signed or not", async () => {
    const site = uniqueQueue('site');
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const shared = `shared-${site}`;
    const reuse = (list: Json) => void (list['dc:identifier'] = shared);
    const other = { endorser: { dn: pki.otherEndorser.dn, ca: pki.otherEndorser.caDn } };
    const subscribe = (name: string, url: string, extra: Partial<SubscriptionConfig> = {}) =>
      client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${name}`,
        args: [{ config: subscription(name, url, site, extra) }],
      });
    const sync = (handle: WorkflowHandle) => handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const mine = await subscribe(
        `${site}-mine`,
        publish({ identifier: shared, version: '1', images: [{ id: 'img-a', version: '1.0', body: disks.a1! }] }),
      );
      expect(await sync(mine)).toMatchObject({ status: 'applied', report: { add: ['img-a'] } });
      const held = (await byName(catalog, shared)).current('img-a')!;

      // Another endorser's list under the same identifier, with other bytes for img-a and an img-b.
      const theirsList = {
        identifier: `theirs-${site}`,
        version: '1',
        images: [
          { id: 'img-a', version: '2.0', body: disks.a2! },
          { id: 'img-b', version: '1.0', body: disks.b1! },
        ],
        signer: pki.otherEndorser,
        edit: reuse,
      };
      const theirs = await subscribe(`${site}-theirs`, publish(theirsList), other);
      for (let round = 0; round < 2; round++) {
        const outcome = await sync(theirs);
        expect(outcome.outcomes?.find((o) => o.identifier === 'img-a')).toMatchObject({
          ok: false,
          note: `not added: the name img-a is taken by image ${held.id} of subscription ${site}-mine (list ${shared}), which subscription ${site}-theirs never changes`,
        });
        // Mine's list has no img-b: its sync must not expire the image theirs registered.
        expect((await sync(mine)).report).toMatchObject({ unchanged: ['img-a'], expire: [] });
        publish({ ...theirsList, version: String(round + 2) });
      }
      const images = await catalog.list();
      expect(await catalog.info(held.id)).toEqual(held);
      expect(images.filter((i) => i.name.includes('_EXPIRED_'))).toEqual([]);
      expect(images.map((i) => [i.name, i.template.IMGFLOW_SUBSCRIPTION]).sort()).toEqual([
        ['img-a', `${site}-mine`],
        ['img-b', `${site}-theirs`],
      ]);
      // Registry steps get the owner and the one image they work on, never the whole list: a history grows with the work done.
      const events = (await client.workflow.getHandle(`subscription-${site}-theirs-sync-1`).fetchHistory()).events!;
      const inputs = await Promise.all(
        events
          .map((e) => e.activityTaskScheduledEventAttributes)
          .filter((a) => a?.activityType?.name === 'registerImage')
          .map(
            async (a) =>
              JSON.parse(Buffer.from((await decodePayload(a!.input!.payloads![0]!)).data!).toString()) as {
                list: Json;
                image: { identifier: string };
              },
          ),
      );
      expect(inputs.map((i) => [Object.keys(i.list).sort(), i.image.identifier])).toEqual([
        [['endorserDn', 'identifier', 'subscription'], 'img-b'],
      ]);

      // A subscription without signature checks, whose list drops both images: it changes nothing of either.
      const unchecked = await subscribe(
        `${site}-unchecked`,
        publish({
          identifier: `unchecked-${site}`,
          version: '1',
          images: [{ id: 'img-a', version: '3.0', body: disks.b1! }],
          signer: pki.otherEndorser,
          edit: reuse,
        }),
        { ...other, insecure: true },
      );
      expect((await sync(unchecked)).report).toMatchObject({ add: [], update: [], expire: [], taken: ['img-a'] });
      expect(await catalog.list()).toEqual(images);

      for (const handle of [mine, theirs, unchecked])
        await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
    });
    await connection.close();
  });

  it('syncs a list behind a token from a credentials file, and the token appears in no history, log or error', async () => {
    const token = 'ghp_s3cretT0kenThatMustNeverLeak';
    const guarded = await startFileServer({
      authorization: `Basic ${Buffer.from(`${token}:x-oauth-basic`).toString('base64')}`,
    });
    const site = uniqueQueue('site');
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const credentials = path.join(dir, `${site}.credentials`);
    fs.writeFileSync(credentials, `${token}:x-oauth-basic\n`, { mode: 0o600 });
    const { client, connection } = await testClient();
    const logs = memoryLogger();
    const acts = createCloudActivities({
      run: createRunner(logs.logger),
      config: { home: path.join(dir, `home-${site}`), site },
      registry: catalog,
      trust: { caDir: pki.caDir },
      logger: logs.logger,
    });
    try {
      // The image sits on another host (the shared server): the token must not go there.
      const imageUrl = publish({
        identifier: `img-${site}`,
        version: '1',
        images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
      });
      const onOtherHost = (list: Json) => {
        ((list['hv:images'] as Json[])[0]!['hv:image'] as Json)['hv:uri'] = imageUrl.replace(
          /[^/]+\.smime$/,
          'img-a-1.0.qcow2',
        );
      };
      const url = publish(
        {
          identifier: `list-${site}`,
          version: '1',
          images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
          edit: onOtherHost,
        },
        guarded,
      );
      const requestsBefore = server.requests.length;
      await withWorkers(
        { workflowQueue, activities: { [queues.cloud(site)]: acts, [CONTROL_QUEUE]: acts } },
        async () => {
          const handle = await client.workflow.start(subscriptionWorkflow, {
            taskQueue: workflowQueue,
            workflowId: `subscription-${site}`,
            args: [{ config: subscription(site, url, site, { credentialsFile: credentials }) }],
          });
          expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
            status: 'applied',
            report: { add: ['img-a'] },
          });
          expect(guarded.requests.map((r) => r.status)).toEqual([200]);
          expect(server.requests.slice(requestsBefore).map((r) => [r.path, r.authorization])).toEqual([
            ['/img-a-1.0.qcow2', undefined],
          ]);

          // Without the file's token the list is refused, and the refusal does not show it.
          fs.writeFileSync(credentials, 'someone:wrong\n');
          const refused = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
          expect(refused).toMatchObject({ status: 'refused', reason: expect.stringMatching(/401/) });
          const histories = await Promise.all(
            [handle, client.workflow.getHandle(`subscription-${site}-sync-1`)].map(async (h) =>
              JSON.stringify(await h.fetchHistory()),
            ),
          );
          for (const text of [...histories, JSON.stringify(refused), JSON.stringify(logs.lines)])
            expect(text).not.toContain(token);
          await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
        },
      );
    } finally {
      await guarded.close();
      await connection.close();
    }
  });

  it("shows the step each image is at in the progress line, through the subscription's running sync", async () => {
    const site = uniqueQueue('site');
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    // The image's body stalls: the download step lasts until the stall is noticed.
    const url = publish({
      identifier: `list-${site}`,
      version: '1',
      images: [{ id: 'img-a', version: '1.0', body: disks.a1!, serve: 'stall' }],
    });
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${site}`,
        args: [{ config: subscription(site, url, site) }],
      });
      const sync = handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      const seen = new Set<string>();
      await expect
        .poll(
          async () =>
            seen.add(await progressStep(handle)) &&
            [...seen].some((step) => step.startsWith('downloading img-a 1.0: downloadImage')),
          { timeout: 20_000, interval: 200 },
        )
        .toBe(true);
      expect(await sync).toMatchObject({ status: 'partial' });
      expect(await progressStep(handle)).toBe('orchestrating');
      await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
    });
    await connection.close();
  });

  it('stages new and changed images under a test name, replaces them with a newer list, and swaps them in on adopt', async () => {
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const url = publish({
      identifier: listId,
      version: '1',
      images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
    });
    const staged = async () => (await byName(catalog, listId)).all.filter((i) => i.name.endsWith('+STAGED'));
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${site}`,
        args: [{ config: subscription(site, url, site, { stage: true }) }],
      });
      await handle.query(describeQuery); // the first workflow task is done
      const before = await eventCount(handle);
      await expect(handle.executeUpdate(adoptUpdate, { args: [{ by: 'alice' }] })).rejects.toThrow();
      expect(await eventCount(handle)).toBe(before); // rejected by the validator: nothing in history

      // A staged sync reports and registers img-a as img-a+STAGED, private to the admin, bootable.
      const first = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(first).toMatchObject({
        status: 'staged',
        listVersion: '1',
        report: { add: ['img-a'] },
        outcomes: [{ identifier: 'img-a', action: 'stage', ok: true, registryName: 'img-a+STAGED' }],
      });
      const [stagedA1] = await staged();
      expect((await byName(catalog, listId)).all).toEqual([
        expect.objectContaining({
          name: 'img-a+STAGED',
          state: 'READY',
          ownerId: 0,
          groupId: 0,
          mode: '700',
          template: expect.objectContaining({ IMGFLOW_VERSION: '1.0' }),
        }),
      ]);
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x11 0 64k', await catalog.diskPath(stagedA1!.id)], {
        stdio: 'ignore',
      });
      expect((await handle.query(describeQuery)).staged).toMatchObject({
        listVersion: '1',
        images: [{ identifier: 'img-a', registryId: stagedA1!.id }],
      });

      // A newer list replaces what the older one staged: img-a 2.0 instead of 1.0, and img-b too.
      publish({
        identifier: listId,
        version: '2',
        images: [
          { id: 'img-a', version: '2.0', body: disks.a2! },
          { id: 'img-b', version: '1.0', body: disks.b1! },
        ],
      });
      const second = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(second).toMatchObject({ status: 'staged', listVersion: '2', report: { add: ['img-a', 'img-b'] } });
      const stagedV2 = await staged();
      // The catalog may give the freed id again: the replaced image is known by its bytes.
      expect(stagedV2.map((i) => [i.name, i.template.IMGFLOW_VERSION, i.mode])).toEqual([
        ['img-a+STAGED', '2.0', '700'],
        ['img-b+STAGED', '1.0', '700'],
      ]);
      expect(
        (await byName(catalog, listId)).all.filter(
          (i) => i.template.IMGFLOW_SHA512 === stagedA1!.template.IMGFLOW_SHA512,
        ),
      ).toEqual([]);
      expect((await byName(catalog, listId)).current('img-a')).toBeUndefined();

      // Adopt swaps the staged images in: no download, no new registration, no staged name left.
      const requestsBefore = server.requests.length;
      const adopted = await handle.executeUpdate(adoptUpdate, { args: [{ by: 'bob' }] });
      expect(adopted).toMatchObject({ status: 'applied', listVersion: '2', report: { add: ['img-a', 'img-b'] } });
      expect(server.requests.slice(requestsBefore).filter((r) => r.path.endsWith('.qcow2'))).toEqual([]);
      let reg = await byName(catalog, listId);
      expect(reg.all.map((i) => [i.id, i.name, i.ownerId, i.mode, i.state])).toEqual(
        stagedV2.map((i) => [i.id, i.name.replace('+STAGED', ''), 0, '700', 'READY']),
      );
      expect((await handle.query(describeQuery)).staged).toBeUndefined();

      // A changed img-a is staged beside the one in service, then swapped in with the site's access.
      const inService = reg.current('img-a')!;
      await catalog.chown(inService.id, { userId: 7, groupId: 70 });
      await catalog.chmod(inService.id, '644');
      publish({
        identifier: listId,
        version: '3',
        images: [
          { id: 'img-a', version: '3.0', body: disks.a1! },
          { id: 'img-b', version: '1.0', body: disks.b1! },
        ],
      });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
        status: 'staged',
        report: { update: ['img-a'], add: [] },
      });
      const [stagedA3] = await staged();
      expect(stagedA3).toMatchObject({
        name: 'img-a+STAGED',
        ownerId: 0,
        mode: '700',
        template: expect.objectContaining({ IMGFLOW_VERSION: '3.0' }),
      });
      expect(await catalog.info(inService.id)).toMatchObject({
        name: 'img-a',
        ownerId: 7,
        mode: '644',
        state: 'READY',
      });
      expect(await handle.executeUpdate(adoptUpdate, { args: [{ by: 'bob' }] })).toMatchObject({
        status: 'applied',
        listVersion: '3',
        report: { update: ['img-a'] },
      });
      reg = await byName(catalog, listId);
      expect(reg.current('img-a')).toMatchObject({
        id: stagedA3!.id,
        ownerId: 7,
        groupId: 70,
        mode: '644',
        state: 'READY',
      });
      expect(await catalog.info(inService.id)).toMatchObject({
        name: expect.stringMatching(PARKED),
        ownerId: 0,
        mode: '700',
        state: 'DISABLED',
      });
      expect(await staged()).toEqual([]);

      // Unsubscribing leaves nothing staged behind.
      publish({
        identifier: listId,
        version: '4',
        images: [
          { id: 'img-a', version: '4.0', body: disks.a2! },
          { id: 'img-b', version: '1.0', body: disks.b1! },
        ],
      });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
        status: 'staged',
        report: { update: ['img-a'] },
      });
      expect(await staged()).toHaveLength(1);
      await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
      expect(await staged()).toEqual([]);
      expect((await handle.query(historyQuery, {})).map((e) => e.op)).toContain('unstaged');
      await handle.result();
      await saveHistory('subscriptionWorkflow-staged', handle);
      await saveHistory('subscriptionSyncWorkflow-adopt', client.workflow.getHandle(`subscription-${site}-sync-5`));
      await saveHistory('subscriptionSyncWorkflow-discard', client.workflow.getHandle(`subscription-${site}-sync-7`));
    });
    await connection.close();
  });

  it('discards what was staged when a later list is refused, parking a staged image a VM still uses', async () => {
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const images = [
      { id: 'img-a', version: '1.0', body: disks.a1! },
      { id: 'img-b', version: '1.0', body: disks.b1! },
    ];
    const url = publish({ identifier: listId, version: '1', images });
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${site}`,
        args: [{ config: subscription(site, url, site, { stage: true }) }],
      });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
        status: 'staged',
        report: { add: ['img-a', 'img-b'] },
      });
      await saveHistory('subscriptionSyncWorkflow-stage', client.workflow.getHandle(`subscription-${site}-sync-1`));
      const staged = (await byName(catalog, listId)).all;
      expect(staged.map((i) => i.name)).toEqual(['img-a+STAGED', 'img-b+STAGED']);
      // The site boots the staged img-b to try it.
      await catalog.setRunning(staged[1]!.id, 1);

      // The next list is signed by someone else: refused, and what was staged goes.
      publish({ identifier: listId, version: '2', images, signer: pki.otherEndorser, names: pki.endorser });
      const refused = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(refused).toMatchObject({ status: 'refused', reason: expect.stringMatching(/check "signer" failed/) });
      await expect(catalog.info(staged[0]!.id)).rejects.toThrow(/does not exist/);
      expect(await catalog.info(staged[1]!.id)).toMatchObject({
        name: expect.stringMatching(/^img-b\+STAGED_EXPIRED_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$/),
        ownerId: 0,
        mode: '700',
        state: 'USED',
      });
      const view = await handle.query(describeQuery);
      expect(view.staged).toBeUndefined();
      expect(view.parked).toEqual([expect.objectContaining({ id: staged[1]!.id, identifier: 'img-b' })]);
      const noAdopt = (await handle
        .executeUpdate(adoptUpdate, { args: [{ by: 'bob' }] })
        .catch((e: unknown) => e)) as Error & { cause?: Error };
      expect(noAdopt.cause?.message).toMatch(/staged report or offered images/);

      // Once no VM uses it, the next adopt deletes the parked copy.
      await catalog.setRunning(staged[1]!.id, 0);
      publish({ identifier: listId, version: '3', images });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({ status: 'staged' });
      const adopted = await handle.executeUpdate(adoptUpdate, { args: [{ by: 'bob' }] });
      expect(adopted.outcomes?.filter((o) => o.action === 'delete').map((o) => o.registryId)).toEqual([staged[1]!.id]);
      expect((await byName(catalog, listId)).all.map((i) => i.name)).toEqual(['img-a', 'img-b']);
      await handle.terminate('test done');
    });
    await connection.close();
  });

  it('in OpenNebula: undoes a failed swap, updates metadata in place, deletes an expired image only once no VM uses it', async () => {
    const contract = new OpenNebulaContract();
    contract.readyDelayMs = 50;
    await contract.start();
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const one = new OpenNebulaRegistry({
      endpoint: contract.url,
      user: 'oneadmin',
      password: 'onepass',
      datastoreId: 1,
    });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const url = publish({
      identifier: listId,
      version: '1',
      images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
    });
    try {
      await withWorkers({ workflowQueue, activities: cloudWorkers(site, one) }, async () => {
        const handle = await client.workflow.start(subscriptionWorkflow, {
          taskQueue: workflowQueue,
          workflowId: `subscription-${site}`,
          args: [
            {
              config: subscription(site, url, site, {
                registry: 'opennebula',
                username: 'oneadmin',
                passwordFile: '/etc/one/password',
              }),
            },
          ],
        });
        expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
          status: 'applied',
        });
        const old = [...contract.images.values()][0]!;
        expect(old).toMatchObject({ name: 'img-a', uid: 0, gid: 0, permissions: [1, 1, 1, 0, 0, 0, 0, 0, 0] });
        await one.chown(old.id, { userId: 5, groupId: 100 });
        await one.chmod(old.id, '644');

        // The new image turns ERROR in the registry: the saga undoes every step before it.
        publish({ identifier: listId, version: '2', images: [{ id: 'img-a', version: '2.0', body: disks.a2! }] });
        contract.failNextAllocation = true;
        const failed = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(failed).toMatchObject({
          status: 'partial',
          outcomes: [
            { identifier: 'img-a', action: 'update', ok: false, note: expect.stringMatching(/ERROR.*restored/) },
          ],
        });
        expect([...contract.images.values()]).toEqual([
          expect.objectContaining({
            id: old.id,
            name: 'img-a',
            uid: 5,
            gid: 100,
            state: STATE.READY,
            permissions: [1, 1, 0, 1, 0, 0, 1, 0, 0],
          }),
        ]);
        expect(contract.calls).toContain('one.image.delete');

        // The next sync succeeds, and the new image gets the access the old one had.
        const retried = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(retried).toMatchObject({ status: 'applied', report: { update: ['img-a'] } });
        const current = [...contract.images.values()].find((i) => i.name === 'img-a')!;
        expect(current).toMatchObject({
          uid: 5,
          gid: 100,
          state: STATE.READY,
          template: expect.objectContaining({ IMGFLOW_VERSION: '2.0' }),
        });
        expect(contract.images.get(old.id)).toMatchObject({
          name: expect.stringMatching(PARKED),
          uid: 0,
          gid: 0,
          state: STATE.DISABLED,
        });

        // Only the description changes, while a VM uses the image: one.image.update, nothing else changes.
        contract.setRunningVms(current.id, 1);
        const before = structuredClone(contract.images.get(current.id)!);
        const callsBefore = contract.calls.length;
        const requestsBefore = server.requests.length;
        publish({
          identifier: listId,
          version: '3',
          images: [{ id: 'img-a', version: '2.0', body: disks.a2!, description: 'img-a, described better' }],
        });
        const metadata = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(metadata).toMatchObject({
          status: 'applied',
          report: { metadata: ['img-a'], update: [] },
          outcomes: [{ identifier: 'img-a', action: 'metadata', ok: true, registryId: current.id }],
        });
        expect(contract.images.get(current.id)).toEqual({
          ...before,
          template: { ...before.template, DESCRIPTION: 'img-a, described better' },
        });
        expect(contract.calls.slice(callsBefore).filter((m) => !/^one\.image(pool)?\.info$/.test(m))).toEqual([
          'one.image.update',
        ]);
        expect(server.requests.slice(requestsBefore).map((r) => r.path)).toEqual([`/${listId}.smime`]);

        // img-a leaves the list while the VM still uses it: renamed and locked at once; OpenNebula
        // refuses to disable or delete an image in use, so it stays parked until the VM is gone.
        publish({ identifier: listId, version: '4', images: [] });
        const gone = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(gone).toMatchObject({
          status: 'applied',
          outcomes: [
            {
              identifier: 'img-a',
              action: 'expire',
              ok: true,
              note: expect.stringMatching(/left enabled \(in use\); deleted once unused/),
            },
          ],
        });
        expect(contract.images.get(current.id)).toMatchObject({
          name: expect.stringMatching(PARKED),
          uid: 0,
          gid: 0,
          permissions: [1, 1, 1, 0, 0, 0, 0, 0, 0],
          state: STATE.USED,
        });
        expect((await handle.query(describeQuery)).parked.map((p) => p.id)).toEqual([current.id]);
        const stillUsed = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(stillUsed.outcomes?.filter((o) => o.action === 'delete')).toEqual([]);
        expect(contract.images.has(current.id)).toBe(true);
        contract.setRunningVms(current.id, 0);
        const deleted = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(deleted.outcomes?.filter((o) => o.action === 'delete').map((o) => o.registryId)).toEqual([current.id]);
        expect(contract.images.has(current.id)).toBe(false);
        expect((await handle.query(describeQuery)).parked).toEqual([]);

        // Nothing secret reached history.
        for (const id of [handle.workflowId, `${handle.workflowId}-sync-2`]) {
          const history = JSON.stringify((await client.workflow.getHandle(id).fetchHistory()).events);
          expect(history).not.toContain('onepass');
        }
        await handle.terminate('test done');
      });
    } finally {
      await contract.stop();
      await connection.close();
    }
  });

  /**
   * Bad input through a real sync of a subscription that already applied version 5 of its list:
   * each bad version 6 is refused naming its check, and the registry is exactly as it was.
   */
  describe('bad input, each refused by a real sync with the check named and nothing applied', () => {
    const good = (extra: Partial<ImageSpec> = {}): ImageSpec => ({
      id: 'img-a',
      version: '2.0',
      body: disks.a2!,
      ...extra,
    });
    const firstImage = (list: Json) => (list['hv:images'] as Json[])[0]!['hv:image'] as Json;
    /** A list-level refusal: the sync is refused, naming the check. (Functions: the PKI exists only once the tests run.) */
    const listRows: [string, () => Partial<ListSpec>, RegExp][] = [
      ['wrong signer', () => ({ signer: pki.otherEndorser, names: pki.endorser }), /image list check "signer" failed/],
      ['wrong CA', () => ({ signer: pki.wrongCaSigner }), /image list check "signature" failed/],
      [
        'an endorser the subscription does not trust',
        () => ({ signer: pki.otherEndorser }),
        /image list check "endorser" failed/,
      ],
      ['unsigned list', () => ({ unsigned: true }), /image list check "signature" failed/],
      ['tampered body', () => ({ tamper: true }), /image list check "signature" failed: .*digest failure/],
      ['future creation date', () => ({ createdMs: 3_600_000 }), /image list check "created" failed/],
      ['lower version', () => ({ version: '4' }), /image list check "version" failed: hv:version 4 is lower than 5/],
      ['malformed JSON', () => ({ body: '{"hv:imagelist": {' }), /image list check "json" failed/],
      [
        'missing required fields',
        () => ({ edit: (list) => delete firstImage(list)['hv:uri'] }),
        /image list check "required-fields" failed: hv:images\[0\]\.hv:image\.hv:uri is missing/,
      ],
      [
        'image identifier with path characters',
        () => ({ edit: (list) => void (firstImage(list)['dc:identifier'] = '../../etc/cron.d/x') }),
        /image list check "image-identifier" failed/,
      ],
    ];
    /** An image-level refusal: the list is fine, the changed image's download or conversion is not. */
    const imageRows: [string, () => ImageSpec, RegExp][] = [
      ['wrong sha512', () => good({ sha512: digestOf(disks.b1!).sha512 }), /^download sha512: the file hashes to/],
      ['wrong size', () => good({ size: disks.a2!.length + 1 }), /^download size: /],
      ['truncated download', () => good({ serve: 'truncated' }), /^download truncated: /],
      ['404', () => good({ serve: 'not-found' }), /^download not-found: .* answered HTTP 404/],
      [
        'a server that stalls',
        () => good({ serve: 'stall' }),
        /^download stalled: no data from 127\.0\.0\.1:\d+ for 3000 ms/,
      ],
      [
        'an OVA with no disk',
        () => good({ body: disks.emptyOva! }),
        /^convert ova-disk: the OVA holds no disk \(members: appliance\.ovf\)/,
      ],
      [
        'an OVA with two disks',
        () => good({ body: disks.twoDiskOva! }),
        /^convert ova-disk: the OVA holds 2 disks \(a\.vmdk, b\.vmdk\); an image is one disk/,
      ],
      [
        'a file declared an OVA that is not one',
        () => good({ format: 'OVA' }),
        /^convert format: the list declares OVA, the file is not an archive \(it reads as qcow2\)/,
      ],
    ];
    const site = uniqueQueue('site');
    const workflowQueue = uniqueQueue('wf');
    let client: Client;
    let connection: Connection;
    /** Each case has a registry of its own (names are unique in one), on the same site and cache. */
    const withSite = <T>(name: string, fn: (catalog: CatalogRegistry, listId: string) => Promise<T>) => {
      const listId = `list-${site}-${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
      const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${listId}`) });
      return withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, () => fn(catalog, listId));
    };

    beforeAll(async () => {
      disks.emptyOva = makeOva(path.join(dir, 'no-disk'));
      disks.twoDiskOva = makeOva(path.join(dir, 'two-disks'), ['a.vmdk', 'b.vmdk']);
      ({ client, connection } = await testClient());
    });
    afterAll(() => connection?.close());

    /** A subscription that applied version 5 (img-a 1.0, opened by the site), then syncs `bad`. */
    function refuseAfterGoodSync(name: string, bad: (listId: string) => ListSpec) {
      return withSite(name, (catalog, listId) => goodThenBad(catalog, listId, name, bad));
    }

    async function goodThenBad(
      catalog: CatalogRegistry,
      listId: string,
      name: string,
      bad: (listId: string) => ListSpec,
    ) {
      const url = publish({
        identifier: listId,
        version: '5',
        images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
      });
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${listId}`,
        args: [{ config: subscription(listId, url, site) }],
      });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] }), name).toMatchObject({
        status: 'applied',
        listVersion: '5',
      });
      const [applied] = await catalog.list({ imageList: listId });
      await catalog.chmod(applied!.id, '644');
      const before = await catalog.list({ imageList: listId });
      publish(bad(listId));
      const outcome = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(await catalog.list({ imageList: listId }), name).toEqual(before);
      const view = await handle.query(describeQuery);
      await handle.terminate('test done');
      return { outcome, view };
    }

    it.each(listRows)('%s', async (name, change, reason) => {
      const { outcome, view } = await refuseAfterGoodSync(name, (identifier) => ({
        identifier,
        version: '6',
        images: [good(), { id: 'img-c', version: '1.0', body: disks.b1! }],
        ...change(),
      }));
      expect(outcome).toMatchObject({ status: 'refused', reason: expect.stringMatching(reason) });
      expect(outcome.reason).toMatch(/^list not applied: /);
      expect(view.lastAppliedVersion).toBe('5');
    });

    it.each(imageRows)('%s', async (name, image, reason) => {
      const { outcome } = await refuseAfterGoodSync(name, (identifier) => ({
        identifier,
        version: '6',
        images: [image()],
      }));
      expect(outcome).toMatchObject({
        status: 'partial',
        report: { update: ['img-a'] },
        outcomes: [{ identifier: 'img-a', action: 'update', ok: false, note: expect.stringMatching(reason) }],
      });
    });

    it('an expired list: its content is not applied, only its images expired, naming the check', () =>
      withSite('expired', async (catalog, listId) => {
        const url = publish({
          identifier: listId,
          version: '5',
          images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
        });
        const handle = await client.workflow.start(subscriptionWorkflow, {
          taskQueue: workflowQueue,
          workflowId: `subscription-${listId}`,
          args: [{ config: subscription(listId, url, site) }],
        });
        await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        publish({
          identifier: listId,
          version: '6',
          images: [good(), { id: 'img-c', version: '1.0', body: disks.b1! }],
          createdMs: -7_200_000,
          expiresMs: -3_600_000,
        });
        const outcome = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(outcome).toMatchObject({
          status: 'expired',
          reason: expect.stringMatching(/image list check "expires" failed/),
          report: { add: [], update: [] },
        });
        // Neither img-a 2.0 nor img-c came in; img-a 1.0, unused, was expired and deleted.
        expect(await catalog.list({ imageList: listId })).toEqual([]);
        await handle.terminate('test done');
      }));

    it('refuses a list for another identifier, bad requests and bad settings', () =>
      withSite('other', async (catalog) => {
        const url = publish({
          identifier: 'l5',
          version: '1',
          images: [{ id: 'img-a', version: '1.0', body: disks.a1! }],
        });
        const handle = await client.workflow.start(subscriptionWorkflow, {
          taskQueue: workflowQueue,
          workflowId: `subscription-${site}`,
          args: [{ config: subscription(site, url, site, { identifier: 'other' }) }],
        });
        expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
          status: 'refused',
          reason: expect.stringMatching(/check "identifier" failed/),
        });
        expect(await catalog.list({ imageList: 'l5' })).toEqual([]);

        // Bad requests are rejected by validators before they enter history.
        const before = await eventCount(handle);
        await expect(handle.executeUpdate(syncUpdate, { args: [{ by: '../etc' }] })).rejects.toThrow();
        const error = (await handle
          .executeUpdate(syncUpdate, { args: [{ by: 'a b' }] })
          .catch((e: unknown) => e)) as Error & { cause?: Error };
        expect(`${error.message} ${error.cause?.message ?? ''}`).toMatch(/by: expected a user name/);
        expect(await eventCount(handle)).toBe(before);
        await handle.terminate('test done');

        // A subscription with bad settings never starts.
        const wrong = await client.workflow.start(subscriptionWorkflow, {
          taskQueue: workflowQueue,
          workflowId: `subscription-${site}-bad`,
          args: [{ config: subscription(`${site}-bad`, url, site, { every: '0h' }) }],
        });
        const failure = (await wrong.result().catch((e: unknown) => e)) as Error & { cause?: Error };
        expect(failure.cause?.message).toMatch(/^every: expected an interval/);
      }));
  });
});
