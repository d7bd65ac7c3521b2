/**
 * The tarball phase: a root filesystem tarball (a local file or a URL, downloaded once into the
 * architecture's cache), used only if its sha256 is the one the recipe names.
 */
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError } from '../../../common/names.js';
import { exists, partialPath, sha256File } from '../../../lib/files.js';
import type { ActivityDeps } from '../../shared/index.js';
import {
  buildDirs,
  loggingRunner,
  MINUTE,
  runPhase,
  type BuildDirs,
  type BuildRef,
  type PhaseResult,
} from '../phase.js';
import { checkSourceInput, type TarballSource } from '../recipe.js';
import { extract, replaceRoot } from '../rootfs.js';

async function downloadTarball(dirs: BuildDirs, source: TarballSource): Promise<string> {
  const target = path.join(dirs.cache, 'tarballs', `${source.sha256}.tar`);
  if (await exists(target)) return target;
  await fs.mkdir(path.dirname(target), { recursive: true });
  const partial = partialPath(target);
  const response = await fetch(source.url!, { signal: AbortSignal.timeout(60 * MINUTE) });
  if (!response.ok || !response.body) throw new Error(`tarball ${source.url}: HTTP ${response.status}`);
  await pipeline(Readable.fromWeb(response.body), createWriteStream(partial));
  await fs.rename(partial, target);
  return target;
}

export function createTarballActivities({ run: runCommand, config }: ActivityDeps) {
  const run = loggingRunner(runCommand);
  return {
    /** A root filesystem tarball, used only if its sha256 is the one the recipe names. */
    async unpackTarball(input: BuildRef & { source: TarballSource }): Promise<PhaseResult & { sha256: string }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('tarball', input.source);
      return runPhase(
        run,
        dirs,
        'tarball',
        { source, arch: input.arch },
        async () => {
          const file = source.url ? await downloadTarball(dirs, source) : source.path!;
          const actual = await sha256File(file);
          if (actual !== source.sha256) {
            if (source.url) await fs.rm(file, { force: true });
            throw new InputError(
              'source.tarball.sha256',
              `the digest of ${source.url ?? file} (${actual})`,
              source.sha256,
            );
          }
          await replaceRoot(run, dirs.root, (partial) => extract(run, file, partial));
          return { sha256: actual };
        },
        { replacesRoot: true },
      );
    },
  };
}
