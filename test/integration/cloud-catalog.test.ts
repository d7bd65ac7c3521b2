import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { RegistryError, TEMPLATE } from '../../activities/cloud/registry/types.js';
import { tempDir } from '../support/dirs.js';

describe('built-in catalog registry', () => {
  const dir = tempDir();
  const catalogDir = path.join(dir, 'catalog');
  const disk = path.join(dir, 'disk.qcow2');
  let catalog: CatalogRegistry;
  const template = { [TEMPLATE.imageList]: 'list-1', [TEMPLATE.image]: 'img-a', DESCRIPTION: 'Alma 9' };

  beforeAll(() => {
    fs.writeFileSync(disk, 'disk bytes');
    catalog = new CatalogRegistry({ dir: catalogDir, ownerId: 0, groupId: 0 });
  });

  it('registers an image: copies the disk in and reaches READY, with a JSON record per image', async () => {
    const id = await catalog.register({ name: 'img-a', path: disk, format: 'qcow2', template });
    const image = await catalog.waitReady(id, { timeoutMs: 2000 });
    expect(image).toMatchObject({ id, name: 'img-a', state: 'READY', ownerId: 0, groupId: 0, mode: '600', template });
    expect(fs.readFileSync(await catalog.diskPath(id), 'utf8')).toBe('disk bytes');
    const record = JSON.parse(fs.readFileSync(path.join(catalogDir, 'images', `${id}.json`), 'utf8')) as {
      state: string;
    };
    expect(record.state).toBe('READY');
    // Only finished records and disks: no temporary files left behind.
    expect(fs.readdirSync(path.join(catalogDir, 'images')).every((n) => /^\d+\.json$/.test(n))).toBe(true);
    expect(fs.readdirSync(path.join(catalogDir, 'disks'))).toEqual([`${id}.qcow2`]);
  });

  it('lists images, filtered by the image list attribute, across instances over the same directory', async () => {
    await catalog.register({ name: 'unrelated', path: disk, format: 'qcow2', template: { DESCRIPTION: 'x' } });
    const reopened = new CatalogRegistry({ dir: catalogDir });
    expect((await reopened.list()).map((i) => i.name)).toEqual(['img-a', 'unrelated']);
    expect((await reopened.list({ imageList: 'list-1' })).map((i) => i.name)).toEqual(['img-a']);
  });

  it('locks, disables, renames and restores an image as a swap does', async () => {
    const [image] = await catalog.list({ imageList: 'list-1' });
    await catalog.chown(image!.id, { userId: 7, groupId: 70 });
    await catalog.chmod(image!.id, '644');
    const remembered = await catalog.info(image!.id);
    await catalog.chown(image!.id, { userId: 0, groupId: 0 });
    await catalog.chmod(image!.id, '700');
    await catalog.setEnabled(image!.id, false);
    await catalog.rename(image!.id, 'img-a_EXPIRED_2026-01-02_03-04-05_UTC');
    expect(await catalog.info(image!.id)).toMatchObject({
      name: 'img-a_EXPIRED_2026-01-02_03-04-05_UTC',
      state: 'DISABLED',
      ownerId: 0,
      mode: '700',
    });
    await catalog.rename(image!.id, remembered.name);
    await catalog.setEnabled(image!.id, true);
    await catalog.chown(image!.id, { userId: remembered.ownerId, groupId: remembered.groupId });
    await catalog.chmod(image!.id, remembered.mode);
    expect(await catalog.info(image!.id)).toMatchObject({
      name: 'img-a',
      state: 'READY',
      ownerId: 7,
      groupId: 70,
      mode: '644',
    });
    await catalog.chown(image!.id, { userId: -1, groupId: 71 });
    expect(await catalog.info(image!.id)).toMatchObject({ ownerId: 7, groupId: 71 });
  });

  it('updates the template in place, merged, leaving name, owner, mode, state and disk alone', async () => {
    const id = await catalog.register({ name: 'meta', path: disk, format: 'qcow2', template });
    await catalog.chmod(id, '640');
    await catalog.setEnabled(id, false);
    const before = await catalog.info(id);
    const diskFile = await catalog.diskPath(id);
    await catalog.updateTemplate(id, { DESCRIPTION: 'Alma 9.1', IMGFLOW_TITLE: 'Alma' });
    expect(await catalog.info(id)).toEqual({
      ...before,
      template: { ...template, DESCRIPTION: 'Alma 9.1', IMGFLOW_TITLE: 'Alma' },
    });
    expect(await catalog.diskPath(id)).toBe(diskFile);
    await expect(catalog.updateTemplate(id, { 'bad key': 'x' })).rejects.toThrow(/^template: expected/);
  });

  it('refuses a name the owner already uses', async () => {
    await catalog.register({ name: 'dup', path: disk, format: 'qcow2', template });
    await expect(catalog.register({ name: 'dup', path: disk, format: 'qcow2', template })).rejects.toThrow(
      /name dup is already taken/,
    );
  });

  it("keeps OpenNebula's rules: no disable or delete while in use, no enable while LOCKED-like states", async () => {
    const id = await catalog.register({ name: 'busy', path: disk, format: 'qcow2', template });
    await catalog.setRunning(id, 2);
    expect((await catalog.info(id)).state).toBe('USED');
    await expect(catalog.setEnabled(id, false)).rejects.toThrow(/cannot be disabled in state USED/);
    await expect(catalog.delete(id)).rejects.toThrow(/cannot be deleted in state USED, it is used by 2 hosts/);
    await catalog.rename(id, 'busy-renamed');
    await catalog.setRunning(id, 0);
    const diskFile = await catalog.diskPath(id);
    await catalog.delete(id);
    expect(fs.existsSync(diskFile)).toBe(false);
    await expect(catalog.info(id)).rejects.toBeInstanceOf(RegistryError);
    // The newest image is gone, yet its id is not given again (OpenNebula never reuses one).
    expect(await catalog.register({ name: 'after-busy', path: disk, format: 'qcow2', template })).toBe(id + 1);
  });

  it('refuses unsafe names, modes, template keys and missing files', async () => {
    await expect(catalog.register({ name: '../escape', path: disk, format: 'qcow2', template })).rejects.toThrow(
      /^name: expected/,
    );
    await expect(
      catalog.register({ name: 'ok', path: disk, format: 'qcow2', template: { 'bad key': 'x' } }),
    ).rejects.toThrow(/^template: expected/);
    await expect(
      catalog.register({ name: 'ok', path: path.join(dir, 'missing'), format: 'qcow2', template }),
    ).rejects.toThrow(/no file at/);
    await expect(catalog.chmod(0, '9')).rejects.toThrow(/^mode: expected/);
    await expect(catalog.info(-1)).rejects.toThrow(/^id: expected/);
  });

  it('serialises concurrent changes so none is lost', async () => {
    const ids = await Promise.all(
      ['c1', 'c2', 'c3', 'c4'].map((name) => catalog.register({ name, path: disk, format: 'qcow2', template })),
    );
    expect(new Set(ids).size).toBe(4);
    await Promise.all([
      catalog.chmod(ids[0]!, '640'),
      catalog.chown(ids[0]!, { userId: 3, groupId: 4 }),
      catalog.setEnabled(ids[0]!, false),
    ]);
    expect(await catalog.info(ids[0]!)).toMatchObject({ mode: '640', ownerId: 3, groupId: 4, state: 'DISABLED' });
  });
});
