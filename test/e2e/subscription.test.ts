/**
 * Image-list subscriptions on a real server, with real openssl signatures, downloads and qemu-img:
 * a full cycle into the catalog (first images private, an update swapping with access re-applied,
 * a metadata-only change, a replayed list refused, an expired list expiring its images and deleting
 * them once unused), staged adoption, a swap that fails in OpenNebula and is undone, and bad input.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
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
  subscriptionTickWorkflow,
  subscriptionWorkflow,
  syncUpdate,
  unsubscribeUpdate,
  type SubscriptionConfig,
} from '../../workflows/subscription.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { startFileServer, type FileServer } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';
import { OpenNebulaContract, STATE } from '../support/opennebula-contract.js';
import { createPki, type Identity, type Pki } from '../support/pki.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const PARKED = /^img-a_EXPIRED_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$/;

interface ImageSpec {
  id: string;
  version: string;
  body: Buffer;
  description?: string;
  /** Lie about the digest, as a tampered or broken list would. */
  sha512?: string;
}

interface ListSpec {
  identifier: string;
  version: string;
  images: ImageSpec[];
  signer?: Identity;
  /** The endorser the list names (default: the signer). */
  names?: Identity;
  createdMs?: number;
  expiresMs?: number;
}

function makeQcow2(file: string, pattern: string): Buffer {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 64k`, file], { stdio: 'ignore' });
  return fs.readFileSync(file);
}

const sha512 = (body: Buffer) => createHash('sha512').update(body).digest('hex');

describe('image-list subscriptions', () => {
  requireTools('openssl', 'qemu-img', 'qemu-io');
  const dir = tempDir();
  let pki: Pki;
  let server: FileServer;
  const disks: Record<string, Buffer> = {};
  let signed = 0;

  /** Signs the list and serves it at /<identifier>.smime with its images. */
  function publish(spec: ListSpec): string {
    const signer = spec.signer ?? pki.endorser;
    const names = spec.names ?? signer;
    const images = spec.images.map((image) => {
      const file = `/${image.id}-${image.version}.qcow2`;
      server.setFile(file, image.body);
      return {
        'hv:image': {
          'dc:identifier': image.id,
          'dc:title': `Image ${image.id}`,
          'dc:description': image.description ?? `${image.id} ${image.version}`,
          'hv:size': image.body.length,
          'sl:checksum:sha512': image.sha512 ?? sha512(image.body),
          'hv:uri': server.url(file),
          'hv:version': image.version,
          'hv:hypervisor': 'QEMU,KVM',
          'hv:format': 'qcow2',
          'sl:arch': 'x86_64',
          'sl:os': 'Linux',
          'sl:osversion': 'Test 1',
          'sl:comments': '',
        },
      };
    });
    const list = {
      'hv:imagelist': {
        'dc:date:created': new Date(Date.now() + (spec.createdMs ?? -60_000)).toISOString(),
        'dc:date:expires': new Date(Date.now() + (spec.expiresMs ?? 86_400_000)).toISOString(),
        'dc:identifier': spec.identifier,
        'dc:description': 'Site images',
        'dc:title': 'Site',
        'dc:source': server.url('/'),
        'hv:version': spec.version,
        'hv:uri': server.url(`/${spec.identifier}.smime`),
        'hv:endorser': { 'hv:x509': { 'hv:dn': names.dn, 'hv:ca': names.caDn, 'hv:email': 'e@example.org', 'dc:creator': 'Endorser' } },
        'hv:images': images,
      },
    };
    server.setFile(`/${spec.identifier}.smime`, fs.readFileSync(pki.sign(JSON.stringify(list), signer, `list-${signed++}`)));
    return server.url(`/${spec.identifier}.smime`);
  }

  function subscription(name: string, url: string, site: string, extra: Partial<SubscriptionConfig> = {}): SubscriptionConfig {
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
    return { current: (name: string) => images.find((i) => i.name === name), parked: images.filter((i) => i.name.includes('_EXPIRED_')), all: images };
  };

  async function eventCount(handle: WorkflowHandle): Promise<number> {
    return (await handle.fetchHistory()).events!.length;
  }

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
    const v1 = { identifier: listId, version: '1', images: [{ id: 'img-a', version: '1.0', body: disks.a1! }, { id: 'img-b', version: '1.0', body: disks.b1! }] };
    const url = publish(v1);
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, { taskQueue: workflowQueue, workflowId: `subscription-${site}`, args: [{ config: subscription(site, url, site) }] });

      // First sync: both images registered, private to the admin.
      const first = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(first).toMatchObject({ status: 'applied', listVersion: '1', report: { add: ['img-a', 'img-b'] } });
      let reg = await byName(catalog, listId);
      for (const name of ['img-a', 'img-b']) expect(reg.current(name)).toMatchObject({ state: 'READY', ownerId: 0, groupId: 0, mode: '700' });
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
      publish({ identifier: listId, version: '2', images: [{ id: 'img-a', version: '2.0', body: disks.a2! }, { id: 'img-b', version: '1.0', body: disks.b1!, description: 'now with a better description' }] });
      const second = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(second).toMatchObject({ status: 'applied', listVersion: '2', report: { update: ['img-a'], metadata: ['img-b'] } });
      reg = await byName(catalog, listId);
      expect(reg.current('img-a')).toMatchObject({ state: 'READY', ownerId: 7, groupId: 70, mode: '644', template: { IMGFLOW_VERSION: '2.0' } });
      expect(reg.current('img-a')!.id).not.toBe(oldA.id);
      expect(await catalog.info(oldA.id)).toMatchObject({ name: expect.stringMatching(PARKED), state: 'DISABLED', ownerId: 0, groupId: 0, mode: '700' });
      expect(reg.current('img-b')).toMatchObject({ state: 'DISABLED', mode: '640', template: { DESCRIPTION: 'now with a better description' } });
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x22 0 64k', await catalog.diskPath(reg.current('img-a')!.id)], { stdio: 'ignore' });
      // Only the changed image was downloaded; the metadata change came from the cache.
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
      expect(replay).toMatchObject({ status: 'refused', reason: expect.stringMatching(/image list check "version" failed/) });
      expect((await byName(catalog, listId)).all).toHaveLength(reg.all.length);

      // Version 3 has expired: img-b goes at once, img-a is in use and stays parked until it is not.
      const newA = reg.current('img-a')!.id;
      await catalog.setRunning(newA, 1);
      publish({ identifier: listId, version: '3', images: v1.images, createdMs: -7_200_000, expiresMs: -3_600_000 });
      const expired = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(expired).toMatchObject({ status: 'expired', reason: expect.stringMatching(/image list check "expires" failed/) });
      expect(await catalog.info(newA)).toMatchObject({ name: expect.stringMatching(PARKED), ownerId: 0, groupId: 0, mode: '700', state: 'USED' });
      expect((await byName(catalog, listId)).current('img-b')).toBeUndefined();
      expect((await handle.query(describeQuery)).parked.map((p) => p.id)).toEqual([newA]);
      await catalog.setRunning(newA, 0);
      const later = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(later.outcomes?.filter((o) => o.action === 'delete').map((o) => o.registryId)).toEqual([newA]);
      await expect(catalog.info(newA)).rejects.toThrow(/does not exist/);

      // A tick, as the schedule starts it, asks for a sync.
      const runsBefore = (await handle.query(historyQuery, {})).filter((e) => e.op === 'sync').length;
      const tick = await client.workflow.start(subscriptionTickWorkflow, { taskQueue: workflowQueue, workflowId: `${site}-tick`, args: [{ subscription: site }] });
      await tick.result();
      await expect.poll(async () => (await handle.query(historyQuery, {})).filter((e) => e.op === 'sync').length, { timeout: 30_000 }).toBe(runsBefore + 1);
      await saveHistory('subscriptionTickWorkflow', tick);

      const view = await handle.executeUpdate(unsubscribeUpdate, { args: [{ by: 'alice' }] });
      expect(view.lastAppliedVersion).toBe('3');
      await handle.result();
      await saveHistory('subscriptionWorkflow', handle);
      await saveHistory('subscriptionSyncWorkflow', client.workflow.getHandle(`subscription-${site}-sync-2`));
    });
    await connection.close();
  });

  it('stages a dry-run report first and applies it on adopt', async () => {
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const url = publish({ identifier: listId, version: '1', images: [{ id: 'img-a', version: '1.0', body: disks.a1! }] });
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: workflowQueue,
        workflowId: `subscription-${site}`,
        args: [{ config: subscription(site, url, site, { stage: true, identifier: listId }) }],
      });
      await handle.query(describeQuery); // the first workflow task is done
      const before = await eventCount(handle);
      await expect(handle.executeUpdate(adoptUpdate, { args: [{ by: 'alice' }] })).rejects.toThrow();
      expect(await eventCount(handle)).toBe(before); // rejected by the validator: nothing in history
      const staged = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
      expect(staged).toMatchObject({ status: 'staged', listVersion: '1', report: { add: ['img-a'] } });
      expect(await catalog.list({ imageList: listId })).toEqual([]);
      const adopted = await handle.executeUpdate(adoptUpdate, { args: [{ by: 'bob' }] });
      expect(adopted).toMatchObject({ status: 'applied', listVersion: '1' });
      expect((await catalog.list({ imageList: listId })).map((i) => i.name)).toEqual(['img-a']);
      await handle.terminate('test done');
    });
    await connection.close();
  });

  it('undoes a swap whose new image fails in OpenNebula: the old image is back with its access', async () => {
    const contract = new OpenNebulaContract();
    contract.readyDelayMs = 50;
    await contract.start();
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    const one = new OpenNebulaRegistry({ endpoint: contract.url, user: 'oneadmin', password: 'onepass', datastoreId: 1 });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const url = publish({ identifier: listId, version: '1', images: [{ id: 'img-a', version: '1.0', body: disks.a1! }] });
    try {
      await withWorkers({ workflowQueue, activities: cloudWorkers(site, one) }, async () => {
        const handle = await client.workflow.start(subscriptionWorkflow, {
          taskQueue: workflowQueue,
          workflowId: `subscription-${site}`,
          args: [{ config: subscription(site, url, site, { registry: 'opennebula', username: 'oneadmin', passwordFile: '/etc/one/password' }) }],
        });
        expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({ status: 'applied' });
        const old = [...contract.images.values()][0]!;
        expect(old).toMatchObject({ name: 'img-a', uid: 0, gid: 0, permissions: [1, 1, 1, 0, 0, 0, 0, 0, 0] });
        await one.chown(old.id, { userId: 5, groupId: 100 });
        await one.chmod(old.id, '644');

        // The new image turns ERROR in the registry: the saga undoes every step before it.
        publish({ identifier: listId, version: '2', images: [{ id: 'img-a', version: '2.0', body: disks.a2! }] });
        contract.failNextAllocation = true;
        const failed = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(failed).toMatchObject({ status: 'partial', outcomes: [{ identifier: 'img-a', action: 'update', ok: false, note: expect.stringMatching(/ERROR.*restored/) }] });
        expect([...contract.images.values()]).toEqual([
          expect.objectContaining({ id: old.id, name: 'img-a', uid: 5, gid: 100, state: STATE.READY, permissions: [1, 1, 0, 1, 0, 0, 1, 0, 0] }),
        ]);
        expect(contract.calls).toContain('one.image.delete');

        // The next sync succeeds, and the new image gets the access the old one had.
        const retried = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(retried).toMatchObject({ status: 'applied', report: { update: ['img-a'] } });
        const current = [...contract.images.values()].find((i) => i.name === 'img-a')!;
        expect(current).toMatchObject({ uid: 5, gid: 100, state: STATE.READY, template: expect.objectContaining({ IMGFLOW_VERSION: '2.0' }) });
        expect(contract.images.get(old.id)).toMatchObject({ name: expect.stringMatching(PARKED), uid: 0, gid: 0, state: STATE.DISABLED });

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

  it('refuses bad lists and bad requests, naming the check, and applies nothing', async () => {
    const site = uniqueQueue('site');
    const catalog = new CatalogRegistry({ dir: path.join(dir, `catalog-${site}`) });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue, activities: cloudWorkers(site, catalog) }, async () => {
      const cases: [string, ListSpec, RegExp][] = [
        ['wrong-signer', { identifier: 'l1', version: '1', images: [], signer: pki.otherEndorser, names: pki.endorser }, /check "signer" failed/],
        ['wrong-ca', { identifier: 'l2', version: '1', images: [], signer: pki.wrongCaSigner }, /check "signature" failed/],
        ['other-endorser', { identifier: 'l3', version: '1', images: [], signer: pki.otherEndorser }, /check "endorser" failed/],
        ['future', { identifier: 'l4', version: '1', images: [], createdMs: 3_600_000 }, /check "created" failed/],
      ];
      for (const [name, spec, reason] of cases) {
        const url = publish(spec);
        const handle = await client.workflow.start(subscriptionWorkflow, { taskQueue: workflowQueue, workflowId: `subscription-${site}-${name}`, args: [{ config: subscription(`${site}-${name}`, url, site) }] });
        const outcome = await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
        expect(outcome, name).toMatchObject({ status: 'refused', reason: expect.stringMatching(reason) });
        await handle.terminate('test done');
      }

      // A list for another identifier than the subscription's.
      const url = publish({ identifier: 'l5', version: '1', images: [{ id: 'img-a', version: '1.0', body: disks.a1! }] });
      const handle = await client.workflow.start(subscriptionWorkflow, { taskQueue: workflowQueue, workflowId: `subscription-${site}`, args: [{ config: subscription(site, url, site, { identifier: 'other' }) }] });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({ status: 'refused', reason: expect.stringMatching(/check "identifier" failed/) });

      // A wrong digest: the image is refused, nothing registered.
      await handle.terminate('next case');
      publish({ identifier: 'l5', version: '2', images: [{ id: 'img-a', version: '1.0', body: disks.a1!, sha512: sha512(disks.a2!) }] });
      const bad = await client.workflow.start(subscriptionWorkflow, { taskQueue: workflowQueue, workflowId: `subscription-${site}-sha`, args: [{ config: subscription(`${site}-sha`, url, site) }] });
      expect(await bad.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({ status: 'partial', outcomes: [{ identifier: 'img-a', ok: false, note: expect.stringMatching(/sha512/) }] });
      expect(await catalog.list({ imageList: 'l5' })).toEqual([]);

      // Bad requests are rejected by validators before they enter history.
      const before = await eventCount(bad);
      await expect(bad.executeUpdate(syncUpdate, { args: [{ by: '../etc' }] })).rejects.toThrow();
      const error = (await bad.executeUpdate(syncUpdate, { args: [{ by: 'a b' }] }).catch((e: unknown) => e)) as Error & { cause?: Error };
      expect(`${error.message} ${error.cause?.message ?? ''}`).toMatch(/by: expected a user name/);
      expect(await eventCount(bad)).toBe(before);
      await bad.terminate('test done');

      // A subscription with bad settings never starts.
      const wrong = await client.workflow.start(subscriptionWorkflow, { taskQueue: workflowQueue, workflowId: `subscription-${site}-bad`, args: [{ config: subscription(`${site}-bad`, url, site, { every: '0h' }) }] });
      const failure = (await wrong.result().catch((e: unknown) => e)) as Error & { cause?: Error };
      expect(failure.cause?.message).toMatch(/^every: expected an interval/);
    });
    await connection.close();
  });
});
