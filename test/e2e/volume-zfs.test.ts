/**
 * Clone-to-compute on zfs-fuse: a map exports the clone through tgtd to the compute host's
 * initiator only (read through libiscsi; another initiator name is refused) and an unmap leaves no
 * target behind. Sync mode between two pools standing for NAS and node: the node receives its
 * own copy, its writes reach the NAS on a pull (asked for, scheduled, and the final one on unmap),
 * and only imgflow's own snapshots are pruned; a frozen volume is skipped by scheduled pulls.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createPipe } from '../../activities/drivers/pipe.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { computeSettings, loadConfig, nasSettings } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';
import { setAttrsUpdate, syncNowUpdate, volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { imgflowAt } from '../support/cli.js';
import { throwawayPool, tgtTargetCount, useTgtd, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { newVersion } from '../support/versions.js';

const MiB = 1024 * 1024;
const INTRUDER = 'iqn.2026-01.org.imgflow:intruder';

describe('volumes on zfs-fuse, exported by tgt or synced to the node', () => {
  requireTools('qemu-img', 'qemu-io', 'iscsi-readcapacity16');
  const dir = tempDir('imgflow-vol-zfs-');
  useZfsFuse();
  useTgtd();
  const nasPool = throwawayPool(dir);
  const nodePool = throwawayPool(dir);
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `vz${nasHost.slice(-6)}`;
  const nasConfig = loadConfig({ home, host: nasHost }, {});
  const nodeConfig = loadConfig({ home, host: nodeHost }, {});
  const { logger } = memoryLogger();
  const run = createRunner(logger);
  const pipe = createPipe(logger);
  const nasEnv = { IMGFLOW_NAS_POOL: `${nasPool.name}/imgflow`, IMGFLOW_NAS_EXPORT: 'tgt', IMGFLOW_SYNC_LOCAL: '1' };
  const nodeEnv = { IMGFLOW_COMPUTE_POOL: `${nodePool.name}/imgflow`, IMGFLOW_SYNC_LOCAL: '1' };
  const activities = {
    [queues.nas(nasHost)]: {
      ...createHostActivities({ role: 'nas', config: nasConfig, arch: 'x86_64', run }),
      ...createNasVolumeActivities({ run, config: nasConfig, pipe, settings: nasSettings(nasEnv) }),
    },
    [queues.compute(nodeHost)]: {
      ...createHostActivities({ role: 'compute', config: nodeConfig, arch: 'x86_64', run }),
      ...createComputeActivities({ run, config: nodeConfig, pipe, settings: computeSettings(nodeEnv) }),
    },
  };
  const cli = imgflowAt(home);
  const datasets = async (pool: string) =>
    (
      await run(['zfs', 'list', '-H', '-r', '-t', 'filesystem', '-o', 'name', `${pool}/imgflow/volumes`], {
        okExitCodes: [1],
      })
    ).stdout
      .split('\n')
      .filter(Boolean);
  const pattern = async (file: string, byte: string, offset: string) => {
    const r = await run(['qemu-io', '-f', 'raw', '-r', '-U', '-c', `read -P ${byte} ${offset} 1M`, file], {
      okExitCodes: [1],
    });
    return r.exitCode === 0 && !/Pattern verification failed/.test(r.stdout + r.stderr);
  };

  let checks = 0;
  /**
   * Reads the NAS's newest imgflow snapshot through a throwaway clone: zfs-fuse can leave a
   * rolled-back file's old pages in the kernel's cache for the dataset's existing mount.
   */
  async function onNas(byte: string, offset: string): Promise<boolean> {
    const volume = `${nasPool.name}/imgflow/volumes/vm-2`;
    const snaps = (await run(['zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name', '-d', '1', volume])).stdout
      .split('\n')
      .filter((n) => n.includes('@imgflow-'))
      .sort();
    const check = `${nasPool.name}/check${++checks}`;
    await run(['zfs', 'clone', snaps.at(-1)!, check]);
    try {
      return await pattern(path.join(nasPool.mountpoint, `check${checks}`, 'disk.raw'), byte, offset);
    } finally {
      // zfs-fuse calls a just-read dataset busy for a moment; a clone left behind would block pruning.
      for (let attempt = 1; ; attempt++) {
        const r = await run(['zfs', 'destroy', check], { okExitCodes: [1] });
        if (r.exitCode === 0 || attempt === 10) break;
        await new Promise((done) => setTimeout(done, 500 * attempt));
      }
    }
  }

  let stored: Promise<void> | undefined;
  const storedVersion = () => (stored ??= storeVersion());

  async function storeVersion(): Promise<void> {
    const file = path.join(home, 'nas', nasHost, 'store', image, 'v1', `${image}-v1.raw`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await run(['qemu-img', 'create', '-q', '-f', 'raw', file, `${32 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', file]);
    const { client, connection } = await testClient();
    await updateLineage(client, image, registerVersionUpdate, {
      ...newVersion(1),
      artifacts: [{ format: 'raw', host: nasHost, path: file, sha256: await sha256File(file), bytes: 32 * MiB }],
    });
    await connection.close();
  }

  it('exports to the compute host only, read through libiscsi, and leaks no target', async () => {
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      await storedVersion();
      const before = tgtTargetCount();
      const mapped = await cli(
        'map',
        'vm-1',
        '--image',
        `${image}:v1`,
        '--nas',
        nasHost,
        '--compute',
        nodeHost,
        '--size',
        '1',
      );
      expect(mapped.stderr).toBe('');
      expect(mapped.status).toBe(0);
      const url = `iscsi://127.0.0.1/iqn.2026-01.org.imgflow:${nasHost}.vm-1/1`;
      expect(mapped.stdout).toBe(`${url}\n`);
      expect(tgtTargetCount()).toBe(before + 1);

      const node = await run([
        'iscsi-readcapacity16',
        '-s',
        `--initiator-name=iqn.2026-01.org.imgflow:${nodeHost}`,
        url,
      ]);
      expect(Number(node.stdout.trim())).toBe(1024 * MiB);
      const intruder = await run(['iscsi-readcapacity16', '-s', `--initiator-name=${INTRUDER}`, url], {
        okExitCodes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255],
      });
      expect(intruder.exitCode).not.toBe(0);

      expect((await cli('unmap', 'vm-1')).status).toBe(0);
      expect(tgtTargetCount()).toBe(before);
      expect(await datasets(nasPool.name)).toContain(`${nasPool.name}/imgflow/volumes/vm-1`);
      expect((await cli('delete-volume', 'vm-1')).status).toBe(0);
      expect(await datasets(nasPool.name)).not.toContain(`${nasPool.name}/imgflow/volumes/vm-1`);
      expect(tgtTargetCount()).toBe(before);
    });
  });

  it("syncs the node's writes back to the NAS: on request, on schedule, and a final pull on unmap", async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      await storedVersion();
      const mapped = await cli(
        'map',
        'vm-2',
        '--image',
        `${image}:v1`,
        '--nas',
        nasHost,
        '--compute',
        nodeHost,
        '--sync',
        '--frequency',
        '3600',
      );
      expect(mapped.stderr).toBe('');
      expect(mapped.status).toBe(0);
      const nodeCopy = path.join(nodePool.mountpoint, 'imgflow', 'volumes', 'vm-2', 'disk.raw');
      expect(mapped.stdout).toBe(`${nodeCopy}\n`);
      expect(await pattern(nodeCopy, '0x5a', '0')).toBe(true);

      await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0xa5 2M 1M', nodeCopy]);
      const handle = client.workflow.getHandle(volumeWorkflowId('vm-2'));
      const pulled = await handle.executeUpdate(syncNowUpdate, { args: [{ by: 'alice' }] });
      expect(pulled.sent).toBe(true);
      expect(await onNas('0xa5', '2M')).toBe(true);

      // A scheduled pull: the timer is re-armed by the new frequency.
      await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x3c 4M 1M', nodeCopy]);
      await handle.executeUpdate(setAttrsUpdate, { args: [{ by: 'alice', frequencySeconds: 10 }] });
      await expect
        .poll(async () => (await handle.query(volumeQuery)).sync?.lastSnapshot, { timeout: 40_000, interval: 1000 })
        .not.toBe(pulled.snapshot);
      expect(await onNas('0x3c', '4M')).toBe(true);

      // Someone else's snapshot survives pruning.
      await run(['zfs', 'snapshot', `${nasPool.name}/imgflow/volumes/vm-2@manual`]);
      await handle.executeUpdate(setAttrsUpdate, { args: [{ by: 'alice', frequencySeconds: 3600 }] });
      await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0xc3 6M 1M', nodeCopy]);
      const unmapped = await cli('unmap', 'vm-2');
      expect(unmapped.stderr).toMatch(/unmapped/);
      expect(unmapped.status).toBe(0);
      expect(await onNas('0xc3', '6M')).toBe(true);
      expect(await datasets(nodePool.name)).toEqual([`${nodePool.name}/imgflow/volumes`]);
      const snaps = (
        await run([
          'zfs',
          'list',
          '-H',
          '-t',
          'snapshot',
          '-o',
          'name',
          '-d',
          '1',
          `${nasPool.name}/imgflow/volumes/vm-2`,
        ])
      ).stdout
        .split('\n')
        .filter(Boolean);
      expect(snaps.filter((s) => /@imgflow-/.test(s)).length).toBeLessThanOrEqual(3);
      expect(snaps).toContain(`${nasPool.name}/imgflow/volumes/vm-2@manual`);
      const view = await handle.query(volumeQuery);
      expect(view.history.filter((h) => h.action === 'sync').length).toBeGreaterThanOrEqual(3);
      expect(view.history.some((h) => h.action === 'sync-failed')).toBe(false);
      expect((await cli('delete-volume', 'vm-2')).status).toBe(0);
      expect((await handle.result()).phase).toBe('deleted');
      await saveHistory('volumeWorkflow-sync', handle);
    });
    await connection.close();
  });

  it('skips scheduled pulls of a frozen volume, still pulls when asked, and resumes once thawed', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      await storedVersion();
      expect(
        (
          await cli(
            'map',
            'vm-3',
            '--image',
            `${image}:v1`,
            '--nas',
            nasHost,
            '--compute',
            nodeHost,
            '--sync',
            '--frequency',
            '3600',
          )
        ).status,
      ).toBe(0);
      const handle = client.workflow.getHandle(volumeWorkflowId('vm-3'));
      const pulls = async () =>
        (await handle.fetchHistory()).events!.filter(
          (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'volumePull',
        ).length;

      const frozen = await cli('volume-attrs', 'vm-3', '--freeze', '--frequency', '10');
      expect(frozen.status).toBe(0);
      expect(frozen.stdout).toMatch(/^frequency\s+10s \(frozen\)$/m);
      await expect
        .poll(async () => (await cli('maps', '--nas', nasHost)).stdout, { timeout: 15_000, interval: 500 })
        .toMatch(/^vm-3\s.*\smapped\s+\S+\s+frozen\s+no$/m);
      // Longer than the frequency: no scheduled pull came.
      await new Promise((done) => setTimeout(done, 15_000));
      expect(await pulls()).toBe(0);
      expect((await cli('sync-now', 'vm-3')).status).toBe(0);
      expect(await pulls()).toBe(1);

      expect((await cli('volume-attrs', 'vm-3', '--thaw')).status).toBe(0);
      const synced = async () =>
        (await handle.query(volumeQuery)).history.filter((h) => h.action === 'sync').map((h) => h.by);
      await expect.poll(synced, { timeout: 60_000, interval: 1000 }).toEqual(['alice', 'imgflow']);
      expect((await cli('unmap', 'vm-3')).status).toBe(0);
      expect((await cli('delete-volume', 'vm-3')).status).toBe(0);
    });
    await connection.close();
  });
});
