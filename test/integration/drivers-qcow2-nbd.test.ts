/**
 * The default store (qcow2 files with backing files, no root needed) attached locally, and the
 * same volume served over NBD by qemu-nbd and read by an NBD client.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalAttach, createNbdDirectAttach } from '../../activities/drivers/attach/direct.js';
import { createNbdExport } from '../../activities/drivers/export/nbd.js';
import { createNoneExport } from '../../activities/drivers/export/none.js';
import { createQcow2Storage } from '../../activities/drivers/storage/qcow2.js';
import { createRunner } from '../../activities/runner.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;

/** qemu-nbd processes serving from this test's directory: for leak checks. */
function qemuNbdPids(dir: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return path.basename(argv[0] ?? '') === 'qemu-nbd' && argv.some((a) => a.startsWith(dir));
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('qcow2 volumes, attached locally and over NBD', () => {
  requireTools('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo');
  const dir = tempDir('imgflow-qcow2-');
  const run = createRunner(memoryLogger().logger);
  const storage = createQcow2Storage({ run, root: path.join(dir, 'store') });
  const nbd = createNbdExport({ run, stateDir: path.join(dir, 'nbd'), ports: { first: 20809, last: 20899 } });
  const base = { image: 'alma', version: '9.5' };

  beforeAll(async () => {
    const source = path.join(dir, 'source.raw');
    await run(['qemu-img', 'create', '-q', '-f', 'raw', source, `${48 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', source]);
    await storage.importBase({ ...base, source });
  });

  afterAll(() => {
    // Nothing may outlive the tests, whatever failed.
    for (const pid of qemuNbdPids(dir)) process.kill(pid, 'SIGKILL');
  });

  it('clones a base into a volume with its base as backing file, twice without change', async () => {
    const volume = await storage.clone({ volume: 'vm-1', base, sizeBytes: 64 * MiB });
    expect(volume).toEqual({
      volume: 'vm-1',
      devicePath: path.join(dir, 'store', 'volumes', 'vm-1.qcow2'),
      format: 'qcow2',
      sizeBytes: 64 * MiB,
      origin: path.join(dir, 'store', 'bases', 'alma', '9.5.qcow2'),
    });
    expect(await storage.clone({ volume: 'vm-1', base, sizeBytes: 64 * MiB })).toEqual(volume);
    expect(await storage.importBase({ ...base, source: '/nonexistent' })).toMatchObject({ sizeBytes: 48 * MiB });
    fs.writeFileSync(path.join(dir, 'store', 'volumes', 'notes.txt'), 'not a volume');
    expect(await storage.list()).toEqual(['vm-1']);
  });

  it('attaches locally through a none export: the base shows through the clone', async () => {
    const volume = (await storage.describe('vm-1'))!;
    const none = createNoneExport({ storage });
    const exported = await none.export({ volume: 'vm-1', devicePath: volume.devicePath, format: 'qcow2' });
    expect(await none.find('vm-1')).toEqual(exported);
    const local = createLocalAttach({ run });
    const request = { volume: 'vm-1', url: exported.url };
    expect(await local.attach(request)).toEqual({
      kind: 'local',
      volume: 'vm-1',
      device: volume.devicePath,
      sizeBytes: 64 * MiB,
    });
    expect(await local.isAttached(request)).toBe(true);
    const check = await run(['qemu-io', '-f', 'qcow2', '-r', '-c', 'read -P 0x5a 0 1M', volume.devicePath]);
    expect(check.stdout).not.toMatch(/Pattern verification failed/);
    await local.detach(request);
    await none.unexport('vm-1');
  });

  it('serves the volume over NBD on loopback, readable by NBD clients, once however often asked', async () => {
    const volume = (await storage.describe('vm-1'))!;
    const exported = await nbd.export({ volume: 'vm-1', devicePath: volume.devicePath, format: 'qcow2' });
    expect(exported.url).toMatch(/^nbd:\/\/127\.0\.0\.1:208\d\d\/vm-1$/);
    expect(await nbd.export({ volume: 'vm-1', devicePath: volume.devicePath, format: 'qcow2' })).toEqual(exported);
    expect(qemuNbdPids(dir)).toHaveLength(1);
    expect(await nbd.list()).toEqual([exported]);

    const client = createNbdDirectAttach({ run });
    expect(await client.attach({ volume: 'vm-1', url: exported.url })).toEqual({
      kind: 'nbd-direct',
      volume: 'vm-1',
      url: exported.url,
      sizeBytes: 64 * MiB,
    });
    const info = JSON.parse((await run(['qemu-img', 'info', '--output=json', exported.url])).stdout) as Record<
      string,
      unknown
    >;
    expect(info['virtual-size']).toBe(64 * MiB);
  });

  it('serves a second volume on another port', async () => {
    const second = await storage.clone({ volume: 'vm-2', base });
    const exported = await nbd.export({ volume: 'vm-2', devicePath: second.devicePath, format: 'qcow2' });
    const first = (await nbd.find('vm-1'))!;
    expect(exported.url).not.toBe(first.url);
    expect(await createNbdDirectAttach({ run }).attach({ volume: 'vm-2', url: exported.url })).toMatchObject({
      sizeBytes: 48 * MiB,
    });
  });

  it('unexport stops qemu-nbd and leaves no process, twice without error', async () => {
    const url = (await nbd.find('vm-1'))!.url;
    await nbd.unexport('vm-1');
    await nbd.unexport('vm-1');
    await nbd.unexport('vm-2');
    expect(qemuNbdPids(dir)).toEqual([]);
    expect(await nbd.list()).toEqual([]);
    expect(await createNbdDirectAttach({ run }).isAttached({ volume: 'vm-1', url })).toBe(false);
  });

  it('snapshots inside the qcow2, prunes to the newest three of its own, destroys twice', async () => {
    const names = [
      'imgflow-20260101t000000000z',
      'imgflow-20260102t000000000z',
      'imgflow-20260103t000000000z',
      'imgflow-20260104t000000000z',
      'imgflow-20260105t000000000z',
    ];
    for (const name of names) await storage.snapshot('vm-1', name);
    await storage.snapshot('vm-1', names[0]);
    await run(['qemu-img', 'snapshot', '-c', 'by-hand', (await storage.describe('vm-1'))!.devicePath]);
    expect(await storage.pruneSnapshots('vm-1')).toEqual(names.slice(0, 2));
    expect(await storage.listSnapshots('vm-1')).toEqual(names.slice(2));
    const all = JSON.parse(
      (await run(['qemu-img', 'info', '--output=json', (await storage.describe('vm-1'))!.devicePath])).stdout,
    ) as { snapshots: { name: string }[] };
    expect(all.snapshots.map((s) => s.name)).toContain('by-hand');
    await expect(storage.snapshot('vm-1', 'nightly')).rejects.toThrow(/imgflow-/);

    await storage.destroy('vm-1');
    await storage.destroy('vm-1');
    expect(await storage.exists('vm-1')).toBe(false);
    expect(await storage.list()).toEqual(['vm-2']);
  });
});
