/**
 * The NAS's limit of concurrent sync pulls (IMGFLOW_NAS_SYNC_LIMIT): four volumes pulled at once
 * on two zfs-fuse pools standing for the NAS and a node. Every pull completes, and no more than
 * the limit stream at any moment. Each stream is held until one more than the limit is streaming
 * or a few seconds have passed, so a broken limit shows up as an overlap rather than as luck.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createPipe } from '../../activities/drivers/pipe.js';
import type { Pipe } from '../../activities/drivers/types.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { computeSettings, loadConfig, nasSettings } from '../../lib/config.js';
import { throwawayPool, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;
const VOLUMES = ['vm-1', 'vm-2', 'vm-3', 'vm-4'];
const snap = (n: number) => `imgflow-20260101t0000${String(n).padStart(2, '0')}000z`;

/** The real pipe, counting how many streams run at once. */
function countingPipe(real: Pipe, limit: number) {
  const counts = { active: 0, most: 0 };
  const pipe: Pipe = async (producer, consumer, options) => {
    counts.active++;
    counts.most = Math.max(counts.most, counts.active);
    try {
      for (let waited = 0; counts.most <= limit && waited < 5000; waited += 100) await sleep(100);
      await real(producer, consumer, options);
    } finally {
      counts.active--;
    }
  };
  return { pipe, counts };
}

describe('concurrent sync pulls on one NAS', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-sync-limit-');
  useZfsFuse();
  const nasPool = throwawayPool(dir);
  const nodePool = throwawayPool(dir);
  const home = path.join(dir, 'home');
  const { logger } = memoryLogger();
  const run = createRunner(logger);
  const real = createPipe(logger);
  const nasConfig = loadConfig({ home, host: 'nas-limit' }, {});
  const nasEnv = { IMGFLOW_NAS_POOL: `${nasPool.name}/imgflow`, IMGFLOW_SYNC_LOCAL: '1' };
  const node = createComputeActivities({
    run,
    config: loadConfig({ home, host: 'node-limit' }, {}),
    pipe: real,
    settings: computeSettings({ IMGFLOW_COMPUTE_POOL: `${nodePool.name}/imgflow`, IMGFLOW_SYNC_LOCAL: '1' }),
  });
  const devices = new Map<string, string>();

  beforeAll(async () => {
    const source = path.join(home, 'nas', 'nas-limit', 'store', 'img', 'v1', 'img-v1.raw');
    fs.mkdirSync(path.dirname(source), { recursive: true });
    await run(['qemu-img', 'create', '-q', '-f', 'raw', source, `${16 * MiB}`]);
    const nas = createNasVolumeActivities({ run, config: nasConfig, pipe: real, settings: nasSettings(nasEnv) });
    for (const volume of VOLUMES) {
      await nas.volumeClone({ volume, image: 'img', version: 'v1', source });
      await nas.volumeSnapshot({ volume, name: snap(1) });
      const copy = await node.computeReceive({
        volume,
        nas: 'nas-limit',
        nasRoot: `${nasPool.name}/imgflow`,
        snapshot: snap(1),
      });
      devices.set(volume, copy.devicePath);
    }
  });

  for (const limit of [1, 2]) {
    it(`streams at most ${limit} at once with IMGFLOW_NAS_SYNC_LIMIT=${limit}, and every pull completes`, async () => {
      const { pipe, counts } = countingPipe(real, limit);
      const nas = createNasVolumeActivities({
        run,
        config: nasConfig,
        pipe,
        settings: nasSettings({ ...nasEnv, IMGFLOW_NAS_SYNC_LIMIT: String(limit) }),
      });
      for (const volume of VOLUMES)
        await run(['qemu-io', '-f', 'raw', '-c', `write -P 0x${limit}${limit} ${limit}M 1M`, devices.get(volume)!]);
      const results = await Promise.all(
        VOLUMES.map((volume) =>
          nas.volumePull({
            volume,
            computeHost: 'node-limit',
            nodeRoot: `${nodePool.name}/imgflow`,
            snapshot: snap(limit + 1),
          }),
        ),
      );
      expect(results.map((r) => [r.snapshot, r.from, r.sent])).toEqual(
        VOLUMES.map(() => [snap(limit + 1), snap(limit), true]),
      );
      expect(counts.most).toBe(limit);
    });
  }

  it('refuses a limit that is not a whole number from 1', () => {
    expect(() =>
      createNasVolumeActivities({
        run,
        config: nasConfig,
        settings: nasSettings({ ...nasEnv, IMGFLOW_NAS_SYNC_LIMIT: '0' }),
      }),
    ).toThrow(/IMGFLOW_NAS_SYNC_LIMIT: expected a whole number from 1 to 100/);
  });
});
