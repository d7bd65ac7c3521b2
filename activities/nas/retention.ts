/**
 * Retention on queue `nas.<host>`: removes a version's directory from this NAS's image store once
 * its lineage has marked it removed. Idempotent: a retry after a crash finishes the removal.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkName } from '../../common/names.js';
import { paths, type Config } from '../../lib/config.js';
import { exists } from '../../lib/files.js';

export function createNasRetentionActivities({ config }: { config: Config }) {
  const store = path.join(paths(config).nas(config.host), 'store');
  return {
    /** Deletes `store/<image>/<version>/`; returns how many files it held (0 when already gone). */
    async removeStoredVersion(input: {
      image: string;
      version: string;
    }): Promise<{ host: string; path: string; files: number }> {
      const dir = path.join(store, checkName('image', input.image), checkName('version', input.version));
      if (!(await exists(dir))) return { host: config.host, path: dir, files: 0 };
      const files = (await fs.readdir(dir, { recursive: true })).length;
      // Stored files are read-only; the directory is not, so removing them needs no chmod.
      await fs.rm(dir, { recursive: true, force: true });
      return { host: config.host, path: dir, files };
    },
  };
}

export type NasRetentionActivities = ReturnType<typeof createNasRetentionActivities>;
