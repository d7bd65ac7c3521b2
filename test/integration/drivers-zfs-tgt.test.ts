/**
 * A volume cloned on a ZFS pool (zfs-fuse, dataset layout) and exported over iSCSI by tgtd to one
 * initiator, read through libiscsi as a compute host running qemu would.
 */
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createIscsiDirectAttach } from '../../activities/drivers/attach/direct.js';
import { createTgtExport } from '../../activities/drivers/export/tgt.js';
import { createZfsStorage } from '../../activities/drivers/storage/zfs.js';
import { createRunner, type Run } from '../../activities/runner.js';
import { throwawayPool, tgtTargetCount, useTgtd, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;
const NODE = 'iqn.2026-01.org.imgflow:node1';
const INTRUDER = 'iqn.2026-01.org.imgflow:node2';

describe('zfs-fuse volume exported by tgt', () => {
  requireTools('qemu-img', 'qemu-io', 'iscsi-readcapacity16');
  const dir = tempDir('imgflow-zfs-tgt-');
  useZfsFuse();
  useTgtd();
  const pool = throwawayPool(dir);
  const run: Run = createRunner(memoryLogger().logger);
  const storage = createZfsStorage({ run, root: `${pool.name}/imgflow` });
  // A NAS name of its own, so parallel test files never see each other's targets.
  const nas = `nas-${pool.name.slice(-8)}`;
  const exporter = createTgtExport({ run, nas, portal: '127.0.0.1' });
  const node = createIscsiDirectAttach({ run, initiatorName: NODE });
  const intruder = createIscsiDirectAttach({ run, initiatorName: INTRUDER });
  const base = { image: 'rocky', version: '9.4' };

  beforeAll(async () => {
    const source = path.join(dir, 'source.raw');
    await run(['qemu-img', 'create', '-q', '-f', 'raw', source, `${64 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', source]);
    await storage.importBase({ ...base, source });
  });

  it('imports a base once and clones it, growing the clone, both twice without change', async () => {
    const first = await storage.describeBase(base);
    expect(first).toMatchObject({ origin: `${pool.name}/imgflow/bases/rocky/9.4@imgflow-base`, sizeBytes: 64 * MiB });
    expect(await storage.importBase({ ...base, source: '/nonexistent' })).toEqual(first);

    const volume = await storage.clone({ volume: 'vm-101', base, sizeBytes: 96 * MiB });
    expect(volume).toMatchObject({ volume: 'vm-101', format: 'raw', sizeBytes: 96 * MiB, origin: first!.origin });
    expect(volume.devicePath).toBe(path.join(pool.mountpoint, 'imgflow', 'volumes', 'vm-101', 'disk.raw'));
    expect(await storage.clone({ volume: 'vm-101', base, sizeBytes: 96 * MiB })).toEqual(volume);
    const check = await run(['qemu-io', '-f', 'raw', '-r', '-c', 'read -P 0x5a 0 1M', volume.devicePath]);
    expect(check.stdout).not.toMatch(/Pattern verification failed/);
    expect(await storage.list()).toEqual(['vm-101']);
  });

  it('lists only volumes imgflow made', async () => {
    await run(['zfs', 'create', '-p', `${pool.name}/imgflow/volumes/foreign`]);
    expect(await storage.list()).toEqual(['vm-101']);
    // Left in place: the later tests' listings must keep ignoring it.
  });

  it('exports to one initiator: it reads the capacity, another initiator name is refused', async () => {
    const volume = (await storage.describe('vm-101'))!;
    const before = tgtTargetCount();
    const exported = await exporter.export({
      volume: 'vm-101',
      devicePath: volume.devicePath,
      format: 'raw',
      initiator: NODE,
    });
    expect(exported).toMatchObject({
      kind: 'tgt',
      target: `iqn.2026-01.org.imgflow:${nas}.vm-101`,
      url: `iscsi://127.0.0.1/iqn.2026-01.org.imgflow:${nas}.vm-101/1`,
      devicePath: volume.devicePath,
      initiators: [NODE],
    });
    expect(tgtTargetCount()).toBe(before + 1);
    // The second export finds the target and changes nothing.
    expect(await exporter.export({ volume: 'vm-101', devicePath: volume.devicePath, initiator: NODE })).toEqual(
      exported,
    );
    expect(tgtTargetCount()).toBe(before + 1);
    expect(await exporter.find('vm-101')).toEqual(exported);
    expect(await exporter.list()).toEqual([exported]);

    const request = { volume: 'vm-101', url: exported.url };
    expect(await node.attach(request)).toEqual({
      kind: 'iscsi-direct',
      volume: 'vm-101',
      url: exported.url,
      sizeBytes: 96 * MiB,
    });
    expect(await node.isAttached(request)).toBe(true);
    await expect(intruder.attach(request)).rejects.toThrow(/iscsi-readcapacity16/);
    expect(await intruder.isAttached(request)).toBe(false);
    await node.detach(request);
    await node.detach(request);
  });

  it('re-export to another initiator leaves that initiator alone in the ACL', async () => {
    const volume = (await storage.describe('vm-101'))!;
    const moved = await exporter.export({ volume: 'vm-101', devicePath: volume.devicePath, initiator: INTRUDER });
    expect(moved.initiators).toEqual([INTRUDER]);
    expect(await intruder.isAttached({ volume: 'vm-101', url: moved.url })).toBe(true);
    expect(await node.isAttached({ volume: 'vm-101', url: moved.url })).toBe(false);
  });

  it('unexport leaves no target behind, and a second unexport is a no-op', async () => {
    const before = tgtTargetCount();
    await exporter.unexport('vm-101');
    expect(tgtTargetCount()).toBe(before - 1);
    expect(await exporter.find('vm-101')).toBeUndefined();
    await exporter.unexport('vm-101');
    expect(tgtTargetCount()).toBe(before - 1);
  });

  it('refuses names that could reach a command or path unchecked', async () => {
    await expect(exporter.export({ volume: '../x', devicePath: '/dev/null', initiator: NODE })).rejects.toThrow(
      /volume/,
    );
    await expect(exporter.export({ volume: 'vm-102', devicePath: '/dev/null', initiator: 'ALL' })).rejects.toThrow(
      /initiator/,
    );
    await expect(storage.clone({ volume: 'a b', base })).rejects.toThrow(/volume/);
  });

  it('snapshots, prunes to the newest three of its own, and destroys twice', async () => {
    const names = [
      'imgflow-20260101t000000000z',
      'imgflow-20260102t000000000z',
      'imgflow-20260103t000000000z',
      'imgflow-20260104t000000000z',
    ];
    for (const name of names) {
      expect(await storage.snapshot('vm-101', name)).toBe(name);
      expect(await storage.snapshot('vm-101', name)).toBe(name);
    }
    await run(['zfs', 'snapshot', `${pool.name}/imgflow/volumes/vm-101@manual`]);
    expect(await storage.pruneSnapshots('vm-101')).toEqual([names[0]]);
    expect(await storage.listSnapshots('vm-101')).toEqual(names.slice(1));
    const all = (
      await run(['zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name', '-r', `${pool.name}/imgflow/volumes/vm-101`])
    ).stdout;
    expect(all).toMatch(/@manual$/m);

    await storage.destroy('vm-101');
    await storage.destroy('vm-101');
    expect(await storage.exists('vm-101')).toBe(false);
    expect(await storage.list()).toEqual([]);
  });
});
