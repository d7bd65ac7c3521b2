/**
 * The cloud worker is killed (SIGKILL) in the middle of a swap, right after the old image was
 * parked, or right after the new one was registered and before the old access is re-applied; a
 * new worker takes over. The swap ends complete or undone: one READY image under the
 * identifier with the site's access, and no parked image without a successor.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createCloudActivities } from '../../activities/cloud/index.js';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';
import { createRunner } from '../../activities/runner.js';
import { CONTROL_QUEUE } from '../../common/queues.js';
import { subscriptionWorkflow } from '../../workflows/subscription/workflow.js';
import { syncUpdate } from '../../workflows/subscription/messages.js';
import { spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { oneImageList, patternedQcow2 } from '../support/imagelists.js';
import { startFileServer } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';
import { createPki } from '../support/pki.js';
import { killGroup } from '../support/processes.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

/** Where the worker dies, told from what the registry holds at that moment. */
const KILL_POINTS = [
  {
    name: 'between rename and register',
    reached: (images: RegistryImage[]) => images.some((i) => i.name.includes('_EXPIRED_')),
  },
  {
    name: 'between register and re-apply',
    reached: (images: RegistryImage[], oldId: number) => images.some((i) => i.name === 'img-a' && i.id !== oldId),
  },
];

describe('cloud worker killed during a swap', () => {
  requireTools('openssl', 'qemu-img', 'qemu-io');
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => killGroup(c.pid)));
  const dirs = KILL_POINTS.map(() => tempDir());

  for (const [n, point] of KILL_POINTS.entries())
    it(
      `${point.name}: ends with the new image complete or the old one restored, never a parked image without a successor`,
      { timeout: 300_000 },
      async () => {
        const dir = dirs[n]!;
        const home = path.join(dir, 'home');
        const pki = createPki(path.join(dir, 'pki'));
        const server = await startFileServer();
        const site = uniqueQueue('site');
        const listId = `list-${site}`;
        const bodies = {
          '1.0': patternedQcow2(path.join(dir, 'a1.qcow2'), '0x11'),
          '2.0': patternedQcow2(path.join(dir, 'a2.qcow2'), '0x22'),
        };
        const publish = oneImageList(server, pki, listId, bodies, 'crash');
        const startCloudWorker = () => {
          const child = spawnImgflow(
            [
              '--address',
              inject('temporalAddress'),
              '--namespace',
              NAMESPACE,
              '--home',
              home,
              'worker',
              '--role',
              'cloud',
              '--site',
              site,
              '--metrics',
              '',
            ],
            {
              IMGFLOW_CA_DIR: pki.caDir,
              IMGFLOW_LOG_PRETTY: '0',
            },
          );
          children.push(child);
          return child;
        };
        // The worker's own catalog, read here from its files.
        const catalog = new CatalogRegistry({ dir: path.join(home, 'catalog') });
        const control = createCloudActivities({
          run: createRunner(memoryLogger().logger),
          config: { home: path.join(dir, 'control'), site },
          registry: catalog,
          trust: { caDir: pki.caDir },
        });
        const workflowQueue = uniqueQueue('wf');
        const { client, connection } = await testClient();
        try {
          await withWorkers({ workflowQueue, activities: { [CONTROL_QUEUE]: control } }, async () => {
            const first = startCloudWorker();
            publish('1', '1.0');
            const config = {
              name: site,
              url: server.url('/list.smime'),
              endorser: { dn: pki.endorser.dn, ca: pki.endorser.caDn },
              every: '6h',
              newImages: 'accept' as const,
              registry: 'catalog' as const,
              format: 'qcow2' as const,
              stage: false,
              site,
              workerWaitSeconds: 120,
            };
            const handle = await client.workflow.start(subscriptionWorkflow, {
              taskQueue: workflowQueue,
              workflowId: `subscription-${site}`,
              args: [{ config }],
            });
            expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({
              status: 'applied',
            });
            const old = (await catalog.list({ imageList: listId }))[0]!;
            await catalog.chown(old.id, { userId: 7, groupId: 70 });
            await catalog.chmod(old.id, '644');

            publish('2', '2.0');
            const sync = handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] });
            // Kill the worker the moment the registry shows the swap at this point.
            while (!point.reached(await catalog.list({ imageList: listId }), old.id))
              await new Promise((r) => setTimeout(r, 5));
            killGroup(first.pid);
            startCloudWorker();
            const outcome = await sync;
            expect(['applied', 'partial']).toContain(outcome.status);

            const images = await catalog.list({ imageList: listId });
            const current = images.filter((i) => i.name === 'img-a');
            expect(current).toHaveLength(1);
            expect(current[0]).toMatchObject({ state: 'READY', ownerId: 7, groupId: 70, mode: '644' });
            expect(images.filter((i) => i.state === 'INIT' || i.state === 'ERROR')).toEqual([]);
            const parked = images.filter((i) => i.name.includes('_EXPIRED_'));
            // Complete: the old one parked and locked, the new one in its place; undone: nothing parked.
            if (parked.length) {
              expect(current[0]!.template.IMGFLOW_VERSION).toBe('2.0');
              expect(parked).toEqual([
                expect.objectContaining({ id: old.id, ownerId: 0, groupId: 0, mode: '700', state: 'DISABLED' }),
              ]);
            } else {
              expect(current[0]).toMatchObject({
                id: old.id,
                template: expect.objectContaining({ IMGFLOW_VERSION: '1.0' }),
              });
            }
            await handle.terminate('test done');
          });
        } finally {
          await server.close();
          await connection.close();
        }
      },
    );
});
