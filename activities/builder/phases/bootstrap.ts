/**
 * The bootstrap phase: a Debian tree made by debootstrap, or the cached tree of an earlier
 * bootstrap with the same key (suite, variant, mirror, packages, architecture).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { debianArch } from '../../../common/arch.js';
import { checkArch } from '../../../common/names.js';
import type { BuilderSettings } from '../../../lib/config.js';
import { exists, partialPath } from '../../../lib/files.js';
import type { Run } from '../../runner.js';
import type { ActivityDeps } from '../../shared/index.js';
import { checkTreeArch } from '../arch.js';
import { buildDirs, fetchEnv, loggingRunner, MINUTE, runPhase, type BuildRef, type PhaseResult } from '../phase.js';
import { bootstrapKey, checkSourceInput, type DebootstrapSource } from '../recipe.js';
import { CHROOT_ENV, ensureProcDir, extract, inImageArgv, replaceRoot, TAR_FLAGS } from '../rootfs.js';

export const BOOTSTRAP_REUSED = 'bootstrap reused: same suite, variant, mirror, packages';

/**
 * debootstrap in two stages: the first only downloads and unpacks, on the host; the second runs
 * the packages' own scripts, so it runs isolated in the image like any other image code.
 */
async function debootstrapInto(
  run: Run,
  target: string,
  arch: string,
  source: DebootstrapSource,
  env: Record<string, string>,
): Promise<void> {
  const argv = [
    'debootstrap',
    '--foreign',
    `--arch=${debianArch(checkArch('arch', arch))}`,
    `--components=${source.components.join(',')}`,
  ];
  if (source.variant !== 'default') argv.push(`--variant=${source.variant}`);
  if (source.packages.length) argv.push(`--include=${source.packages.join(',')}`);
  const stages = [
    () => run([...argv, source.suite, target, source.mirror], { env, timeoutMs: 60 * MINUTE, okExitCodes: [1] }),
    async () => {
      await ensureProcDir(target);
      return run(inImageArgv(target, ['/debootstrap/debootstrap', '--second-stage']), {
        env: CHROOT_ENV,
        timeoutMs: 60 * MINUTE,
        okExitCodes: [1],
      });
    },
  ];
  for (const stage of stages) {
    // debootstrap prints its errors ("E: ...") on stdout: the failure carries the last one.
    const result = await stage();
    if (result.exitCode !== 0) {
      const error =
        result.stdout
          .split('\n')
          .filter((line) => line.startsWith('E: '))
          .at(-1)
          ?.slice(3) ?? `exit code ${result.exitCode}`;
      throw new Error(`debootstrap of ${source.suite} from ${source.mirror} failed: ${error}`);
    }
  }
}

/** Stores a finished bootstrap tree as a tarball under its key, for builds with the same inputs. */
async function cacheTree(run: Run, tree: string, tarball: string): Promise<void> {
  await fs.mkdir(path.dirname(tarball), { recursive: true });
  // Builds with the same key may finish together: each writes its own partial, the last rename wins.
  const partial = `${partialPath(tarball)}.${randomUUID().slice(0, 8)}`;
  try {
    await run(['tar', ...TAR_FLAGS, '-C', tree, '-cf', partial, '.'], { timeoutMs: 30 * MINUTE });
    await fs.rename(partial, tarball);
  } finally {
    await fs.rm(partial, { force: true });
  }
}

export function createBootstrapActivities({
  run: runCommand,
  config,
  settings = {},
}: ActivityDeps & { settings?: BuilderSettings }) {
  const run = loggingRunner(runCommand);
  // A builder with no route out fetches packages through the site's proxy; only those commands get it.
  const env = fetchEnv(settings);
  return {
    /** debootstrap, or the cached tree of an earlier bootstrap with the same key. */
    async bootstrap(
      input: BuildRef & { source: DebootstrapSource },
    ): Promise<PhaseResult & { cacheKey: string; cacheHit: boolean }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('debootstrap', input.source);
      const cacheKey = bootstrapKey(input.arch, source);
      return runPhase(
        run,
        dirs,
        'bootstrap',
        { arch: input.arch, source },
        async () => {
          const cached = path.join(dirs.cache, 'bootstrap', `${cacheKey}.tar`);
          const cacheHit = await exists(cached);
          await replaceRoot(run, dirs.root, async (partial) => {
            if (cacheHit) return extract(run, cached, partial);
            await debootstrapInto(run, partial, input.arch, source, env);
            await checkTreeArch(partial, checkArch('arch', input.arch));
            await cacheTree(run, partial, cached);
          });
          return { cacheKey, cacheHit, ...(cacheHit ? { note: BOOTSTRAP_REUSED } : {}) };
        },
        { replacesRoot: true },
      );
    },
  };
}
