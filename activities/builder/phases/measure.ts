/**
 * The measure phase: installed packages (written to packages.json), disk usage and a file
 * manifest (written to manifest.jsonl), with the private directories and sharing that preparation
 * recorded. Read-only on the tree, so it simply runs again; the measuring itself is ../measure.ts.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { partialPath, sha256File } from '../../../lib/files.js';
import type { ActivityDeps } from '../../shared/index.js';
import { digestOf } from '../digest.js';
import { installedPackages, measureRoot, writeManifest } from '../measure.js';
import { buildDirs, requireRoot, writeJsonAtomic, type BuildDirs, type BuildRef } from '../phase.js';
import type { PrivateDir } from '../recipe.js';

/** What preparation recorded about the image, if it has run. */
async function readImageRecord(dirs: BuildDirs): Promise<{ private?: PrivateDir[]; shared?: boolean }> {
  try {
    const record = JSON.parse(await fs.readFile(dirs.record, 'utf8')) as { private: PrivateDir[]; shared: boolean };
    return { private: record.private, shared: record.shared };
  } catch {
    return {};
  }
}

export function createMeasureActivities({ run, config }: ActivityDeps) {
  return {
    /**
     * Installed packages (written to packages.json), disk usage and a file manifest (path, size,
     * mode, sha256; written to manifest.jsonl), with the private directories and sharing that
     * preparation recorded. Read-only on the tree, so it simply runs again.
     */
    async measure(input: BuildRef): Promise<{
      packages: number;
      packagesFile: string;
      /** Digest of the list's content, and of the file as written (what a copy is checked against). */
      packagesSha256: string;
      packagesFileSha256: string;
      bytes: number;
      manifest: { path: string; entries: number; sha256: string };
      private?: PrivateDir[];
      shared?: boolean;
    }> {
      const dirs = buildDirs(config, input);
      await requireRoot(dirs);
      const list = await installedPackages(dirs.root);
      const packagesFile = path.join(dirs.work, 'packages.json');
      await writeJsonAtomic(packagesFile, list);
      const partial = partialPath(dirs.manifest);
      const manifest = await writeManifest(run, dirs.root, partial);
      await fs.rename(partial, dirs.manifest);
      const { bytes } = await measureRoot(run, dirs.root);
      const image = await readImageRecord(dirs);
      return {
        packages: list.length,
        packagesFile,
        packagesSha256: digestOf(list),
        packagesFileSha256: await sha256File(packagesFile),
        bytes,
        manifest: { path: dirs.manifest, ...manifest },
        ...image,
      };
    },
  };
}
