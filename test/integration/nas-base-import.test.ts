/**
 * Maps of a version no volume on the NAS was cloned from yet, at once: each clone needs the base
 * imported first. On zfs-fuse and on qcow2 files, six clones asked for together all succeed,
 * every clone holds the base's data, and the base is converted once.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner, type Run } from '../../activities/runner.js';
import { loadConfig, nasSettings } from '../../lib/config.js';
import { throwawayPool, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;
const VOLUMES = ['vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5', 'vm-6'];

describe('clones of a new base asked for at once', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-base-import-');
  useZfsFuse();
  const pool = throwawayPool(dir);
  const { logger } = memoryLogger();
  const real = createRunner(logger);

  for (const driver of ['zfs', 'qcow2'] as const) {
    it(`all succeed on ${driver}, from one import of the base`, async () => {
      const home = path.join(dir, driver);
      const config = loadConfig({ home, host: 'nas-import' }, {});
      const source = path.join(home, 'nas', 'nas-import', 'store', 'img', 'v1', 'img-v1.raw');
      fs.mkdirSync(path.dirname(source), { recursive: true });
      await real(['qemu-img', 'create', '-q', '-f', 'raw', source, `${16 * MiB}`]);
      await real(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', source]);
      const converts: string[][] = [];
      const run: Run = (argv, options) => {
        if (argv[0] === 'qemu-img' && argv[1] === 'convert') converts.push([...argv]);
        return real(argv, options);
      };
      const settings = nasSettings(driver === 'zfs' ? { IMGFLOW_NAS_POOL: `${pool.name}/${driver}` } : {});
      const nas = createNasVolumeActivities({ run, config, settings });

      const clones = await Promise.all(
        VOLUMES.map((volume) => nas.volumeClone({ volume, image: 'img', version: 'v1', source })),
      );
      expect(converts).toHaveLength(1);
      for (const clone of clones) {
        const format = driver === 'zfs' ? 'raw' : 'qcow2';
        const compared = await real(['qemu-img', 'compare', '-f', 'raw', '-F', format, source, clone.devicePath], {
          okExitCodes: [1],
        });
        expect(compared.stdout).toMatch(/Images are identical/);
      }
      expect((await nas.volumeList()).volumes.sort()).toEqual(VOLUMES);
      for (const volume of VOLUMES) await nas.volumeDestroy({ volume });
    });
  }
});
