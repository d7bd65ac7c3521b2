import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCloudActivities, type CloudActivities } from '../../activities/cloud/index.js';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { createRunner } from '../../activities/runner.js';
import { parkedName } from '../../common/subscription.js';
import { tempDir } from '../support/dirs.js';
import { digestOf, listDocument } from '../support/imagelists.js';
import { startFileServer, type FileServer } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';
import { createPki, type Pki } from '../support/pki.js';
import { requireTools } from '../support/tools.js';

const LIST_ID = 'f0e1d2c3-site-list';

function makeQcow2(file: string, pattern: string): Buffer {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 64k`, file], { stdio: 'ignore' });
  return fs.readFileSync(file);
}

describe('cloud activities: a list applied to the catalog, then an image swapped and a swap undone', () => {
  const dir = tempDir();
  let pki: Pki;
  let server: FileServer;
  let catalog: CatalogRegistry;
  let cloud: CloudActivities;
  const images: Record<string, Buffer> = {};

  function publish(version: string, imageVersion: string, body: Buffer) {
    const list = listDocument(
      { identifier: LIST_ID, version, source: server.url('/'), uri: server.url('/list.smime'), endorser: pki.endorser },
      [
        {
          identifier: 'img-a',
          title: 'Image A',
          description: `Image A ${imageVersion}`,
          ...digestOf(body),
          uri: server.url(`/img-a-${imageVersion}.qcow2`),
          version: imageVersion,
        },
      ],
    );
    server.setFile(`/img-a-${imageVersion}.qcow2`, body);
    server.setFile('/list.smime', fs.readFileSync(pki.sign(list, pki.endorser, `list-${version}`)));
  }

  beforeAll(async () => {
    requireTools('openssl', 'qemu-img', 'qemu-io', 'tar');
    pki = createPki(path.join(dir, 'pki'));
    server = await startFileServer();
    images.v1 = makeQcow2(path.join(dir, 'a1.qcow2'), '0x11');
    images.v2 = makeQcow2(path.join(dir, 'a2.qcow2'), '0x22');
    images.v3 = makeQcow2(path.join(dir, 'a3.qcow2'), '0x33');
    catalog = new CatalogRegistry({ dir: path.join(dir, 'catalog') });
    cloud = createCloudActivities({
      run: createRunner(memoryLogger().logger),
      config: { home: path.join(dir, 'home'), site: 'site1' },
      registry: catalog,
      trust: { caDir: pki.caDir },
      download: { retryDelayMs: 10, stallTimeoutMs: 5000 },
    });
  });
  afterAll(() => server.close());

  async function fetchAndPrepare(lastAppliedVersion?: string) {
    const { list } = await cloud.fetchImageList({
      subscription: 'site-list',
      url: server.url('/list.smime'),
      expectedIdentifier: LIST_ID,
      lastAppliedVersion,
    });
    const plan = await cloud.planListUpdate({ list });
    const image = list.images[0]!;
    const downloaded = await cloud.downloadImage({ image });
    const converted = await cloud.convertForRegistry({ sha512: downloaded.sha512, path: downloaded.path });
    return { list, plan, image, converted };
  }

  it('applies a first list: the image is added, registered under its identifier with the list metadata', async () => {
    publish('1', '1.0', images.v1!);
    const { list, plan, image, converted } = await fetchAndPrepare();
    expect(plan.add.map((i) => i.identifier)).toEqual(['img-a']);
    const id = await cloud.registerImage({ list, image, path: converted.path });
    expect(await cloud.registerImage({ list, image, path: converted.path })).toBe(id); // a retry finds it
    const ready = await cloud.waitImageReady({ id, timeoutMs: 5000 });
    expect(ready).toMatchObject({
      name: 'img-a',
      state: 'READY',
      template: { IMGFLOW_IMAGELIST: LIST_ID, IMGFLOW_VERSION: '1.0', DESCRIPTION: 'Image A 1.0' },
    });
    // The site's own choices, which a swap must carry over.
    await catalog.chown(id, { userId: 7, groupId: 70 });
    await catalog.chmod(id, '644');
    expect((await cloud.planListUpdate({ list })).unchanged).toEqual(['img-a']);
  });

  it('swaps in a changed image: the old one is locked, disabled and parked; the new one gets the old settings', async () => {
    publish('2', '2.0', images.v2!);
    const { list, plan, image, converted } = await fetchAndPrepare('1');
    expect(plan.update.map((c) => c.image.identifier)).toEqual(['img-a']);
    const old = plan.update[0]!.current;

    const snapshot = await cloud.snapshotImage({ id: old.id });
    expect(snapshot).toMatchObject({ name: 'img-a', ownerId: 7, groupId: 70, mode: '644', enabled: true });
    await cloud.lockImage({ id: old.id });
    await cloud.setImageEnabled({ id: old.id, enabled: false });
    const parked = parkedName('img-a', new Date());
    expect(await cloud.renameImage({ id: old.id, name: parked, free: true })).toBe(parked);
    const id = await cloud.registerImage({ list, image, path: converted.path });
    await cloud.waitImageReady({ id, timeoutMs: 5000 });
    await cloud.applySnapshot({ id, snapshot });

    expect(await catalog.info(id)).toMatchObject({
      name: 'img-a',
      state: 'READY',
      ownerId: 7,
      groupId: 70,
      mode: '644',
      template: { IMGFLOW_VERSION: '2.0' },
    });
    expect(await catalog.info(old.id)).toMatchObject({
      name: parked,
      state: 'DISABLED',
      ownerId: 0,
      groupId: 0,
      mode: '700',
    });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x22 0 64k', await catalog.diskPath(id)], {
      stdio: 'ignore',
    });
    expect((await cloud.planListUpdate({ list })).unchanged).toEqual(['img-a']);
  });

  it('undoes a swap that failed at registration: the old image is back as it was', async () => {
    publish('3', '3.0', images.v3!);
    const { list, plan, image } = await fetchAndPrepare('2');
    const old = plan.update[0]!.current;
    const snapshot = await cloud.snapshotImage({ id: old.id });
    await cloud.lockImage({ id: old.id });
    await cloud.setImageEnabled({ id: old.id, enabled: false });
    // Parked names have one-second resolution: a second parking under a name taken gets a counter, the same on a retry.
    const taken = (await catalog.list({ imageList: LIST_ID })).find((i) => i.name.includes('_EXPIRED_'))!.name;
    expect(await cloud.renameImage({ id: old.id, name: taken, free: true })).toBe(`${taken}.2`);
    expect(await cloud.renameImage({ id: old.id, name: taken, free: true })).toBe(`${taken}.2`);
    await expect(cloud.registerImage({ list, image, path: path.join(dir, 'vanished.qcow2') })).rejects.toThrow(
      /no file at/,
    );

    await cloud.applySnapshot({ id: old.id, snapshot, name: snapshot.name });
    await cloud.applySnapshot({ id: old.id, snapshot, name: snapshot.name }); // undo is safe to retry
    expect(await catalog.info(old.id)).toMatchObject({
      name: 'img-a',
      state: 'READY',
      ownerId: 7,
      groupId: 70,
      mode: '644',
      template: { IMGFLOW_VERSION: '2.0' },
    });
  });

  it('refuses to go back to an older list (a replay)', async () => {
    publish('1', '1.0', images.v1!);
    await expect(
      cloud.fetchImageList({
        subscription: 'site-list',
        url: server.url('/list.smime'),
        expectedIdentifier: LIST_ID,
        lastAppliedVersion: '3',
      }),
    ).rejects.toThrow(/image list check "version" failed/);
  });

  it('deletes parked images, and a second delete is harmless', async () => {
    const parked = (await catalog.list({ imageList: LIST_ID })).filter((i) => i.name.includes('_EXPIRED_'));
    expect(parked).toHaveLength(1);
    await cloud.deleteImage({ id: parked[0]!.id });
    await cloud.deleteImage({ id: parked[0]!.id });
    expect((await catalog.list({ imageList: LIST_ID })).map((i) => i.name)).toEqual(['img-a']);
  });
});
