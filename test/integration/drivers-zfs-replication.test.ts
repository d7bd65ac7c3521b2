/**
 * A compute node's local copy and the NAS pulling its writes back: two zfs-fuse pools stand for
 * the NAS and the node; streams go through the binary-safe pipe, snapshots are pruned to three.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createPipe } from '../../activities/drivers/pipe.js';
import { replicate } from '../../activities/drivers/storage/replication.js';
import { createZfsStorage } from '../../activities/drivers/storage/zfs.js';
import { createRunner } from '../../activities/runner.js';
import { sha256File } from '../../lib/files.js';
import { throwawayPool, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;

describe('incremental snapshots between a NAS pool and a node pool', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-zfs-repl-');
  useZfsFuse();
  const nasPool = throwawayPool(dir);
  const nodePool = throwawayPool(dir);
  const { logger, lines } = memoryLogger();
  const run = createRunner(logger);
  const pipe = createPipe(logger);
  const nas = createZfsStorage({ run, pipe, root: `${nasPool.name}/imgflow` });
  const node = createZfsStorage({ run, pipe, root: `${nodePool.name}/imgflow` });
  const base = { image: 'debian', version: '12' };
  const snap = (n: number) => `imgflow-20260101t0000${String(n).padStart(2, '0')}000z`;

  beforeAll(async () => {
    const source = path.join(dir, 'source.raw');
    await run(['qemu-img', 'create', '-q', '-f', 'raw', source, `${32 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', source]);
    await nas.importBase({ ...base, source });
    await nas.clone({ volume: 'vm-7', base });
  });

  it('copies the NAS volume to the node in full, once', async () => {
    const first = await replicate({ volume: 'vm-7', source: nas, target: node, snapshot: snap(1) });
    expect(first).toEqual({ snapshot: snap(1), sent: true, pruned: { source: [], target: [] } });
    const again = await replicate({ volume: 'vm-7', source: nas, target: node, snapshot: snap(1) });
    expect(again.sent).toBe(false);
    expect(await node.list()).toEqual(['vm-7']);
    const copy = (await node.describe('vm-7'))!;
    expect(copy.sizeBytes).toBe(32 * MiB);
    const check = await run(['qemu-io', '-f', 'raw', '-r', '-c', 'read -P 0x5a 0 1M', copy.devicePath]);
    expect(check.stdout).not.toMatch(/Pattern verification failed/);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'pipeline', exitCodes: [0, 0] }));
  });

  it('pulls what the node wrote back to the NAS incrementally, keeping three snapshots', async () => {
    const copy = (await node.describe('vm-7'))!;
    for (let pass = 2; pass <= 5; pass++) {
      // The guest writes on the node: a new pattern at a new offset each pass.
      await run(['qemu-io', '-f', 'raw', '-c', `write -P 0x${pass}${pass} ${pass}M 1M`, copy.devicePath]);
      const result = await replicate({ volume: 'vm-7', source: node, target: nas, snapshot: snap(pass) });
      expect(result).toMatchObject({ snapshot: snap(pass), from: snap(pass - 1), sent: true });
    }
    const onNas = (await nas.describe('vm-7'))!;
    for (let pass = 2; pass <= 5; pass++) {
      const check = await run([
        'qemu-io',
        '-f',
        'raw',
        '-r',
        '-c',
        `read -P 0x${pass}${pass} ${pass}M 1M`,
        onNas.devicePath,
      ]);
      expect(check.stdout).not.toMatch(/Pattern verification failed/);
    }
    expect(await nas.listSnapshots('vm-7')).toEqual([snap(3), snap(4), snap(5)]);
    expect(await node.listSnapshots('vm-7')).toEqual([snap(3), snap(4), snap(5)]);
  });

  it('a retried pass with the same snapshot name sends nothing more', async () => {
    const result = await replicate({ volume: 'vm-7', source: node, target: nas, snapshot: snap(5) });
    expect(result).toEqual({ snapshot: snap(5), sent: false, pruned: { source: [], target: [] } });
  });

  it('discards stray writes on the receiving side (the copy not in use)', async () => {
    const onNas = (await nas.describe('vm-7'))!;
    const stray = Buffer.alloc(4096, 0xee);
    const handle = await fs.open(onNas.devicePath, 'r+');
    await handle.write(stray, 0, stray.length, 20 * MiB);
    await handle.close();
    await replicate({ volume: 'vm-7', source: node, target: nas, snapshot: snap(6) });
    // Read through a clone of the received snapshot: zfs-fuse can leave the rolled-back file's
    // old pages in the kernel's cache for the dataset's existing mount.
    await run(['zfs', 'clone', `${nasPool.name}/imgflow/volumes/vm-7@${snap(6)}`, `${nasPool.name}/check`]);
    const check = await run(
      ['qemu-io', '-f', 'raw', '-r', '-c', 'read -P 0x00 20M 4k', path.join(nasPool.mountpoint, 'check', 'disk.raw')],
      { okExitCodes: [1] },
    );
    expect(check.stdout).not.toMatch(/Pattern verification failed/);
  });

  it("a pass limited to the volume's speed delivers the same bytes", async () => {
    const copy = (await node.describe('vm-7'))!;
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x77 8M 3M', copy.devicePath]);
    const result = await replicate({
      volume: 'vm-7',
      source: node,
      target: nas,
      snapshot: snap(7),
      bytesPerSecond: 1024 * 1024,
    });
    expect(result).toMatchObject({ snapshot: snap(7), from: snap(6), sent: true });
    const limited = lines.filter((l) => l.msg === 'pipeline' && l.bytesPerSecond === 1024 * 1024);
    expect(limited).toEqual([expect.objectContaining({ exitCodes: [0, 0] })]);
    expect(Number(limited[0]!.bytes)).toBeGreaterThan(3 * MiB);
    // The received snapshot, read through a clone (see above), matches the node's copy byte for byte.
    await run(['zfs', 'clone', `${nasPool.name}/imgflow/volumes/vm-7@${snap(7)}`, `${nasPool.name}/check7`]);
    expect(await sha256File(path.join(nasPool.mountpoint, 'check7', 'disk.raw'))).toBe(
      await sha256File(copy.devicePath),
    );
  });

  it('refuses a full copy over a target that shares no snapshot', async () => {
    await nas.clone({ volume: 'vm-8', base });
    await node.importBase({ ...base, source: (await nas.describeBase(base))!.devicePath });
    await node.clone({ volume: 'vm-8', base });
    await expect(replicate({ volume: 'vm-8', source: node, target: nas, snapshot: snap(1) })).rejects.toThrow(
      /share no snapshot/,
    );
  });
});
