/**
 * The packages phase: apt-get install in the image, isolated with its own /proc, without
 * recommends or service starts, resolving names with the build host's resolver only while it runs.
 */
import fs from 'node:fs/promises';
import type { BuilderSettings } from '../../../lib/config.js';
import type { ActivityDeps } from '../../shared/index.js';
import { buildDirs, fetchEnv, loggingRunner, runPhase, takeRoot, type BuildRef, type PhaseResult } from '../phase.js';
import { assertNothingMounted } from '../prepare.js';
import { checkPackagesInput } from '../recipe.js';
import { runInRoot, withTemporaryFile } from '../rootfs.js';

/** Package scripts may not start services in the build host's chroot (policy-rc.d says no). */
const withoutServiceStarts = <T>(root: string, fn: () => Promise<T>) =>
  withTemporaryFile(root, '/usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', 0o755, fn);

/** apt in the chroot resolves names with the build host's resolver, only while it runs. */
const withHostResolver = async <T>(root: string, fn: () => Promise<T>) =>
  withTemporaryFile(root, '/etc/resolv.conf', await fs.readFile('/etc/resolv.conf'), 0o644, fn);

export function createPackagesActivities({
  run: runCommand,
  config,
  settings = {},
}: ActivityDeps & { settings?: BuilderSettings }) {
  const run = loggingRunner(runCommand);
  // A builder with no route out fetches packages through the site's proxy; only those commands get it.
  const env = fetchEnv(settings);
  return {
    /** apt-get install in the image, isolated with its own /proc, without recommends or service starts. */
    async installPackages(input: BuildRef & { packages: string[] }): Promise<PhaseResult & { requested: number }> {
      const dirs = buildDirs(config, input);
      const packages = checkPackagesInput(input.packages);
      return runPhase(run, dirs, 'packages', { packages, arch: input.arch }, async () => {
        await takeRoot(run, dirs);
        if (packages.length === 0) return { requested: 0 };
        await assertNothingMounted(dirs.root);
        await withHostResolver(dirs.root, () =>
          withoutServiceStarts(dirs.root, async () => {
            await runInRoot(run, dirs.root, ['apt-get', 'update'], env);
            await runInRoot(
              run,
              dirs.root,
              ['apt-get', 'install', '-y', '--no-install-recommends', '--', ...packages],
              env,
            );
            await runInRoot(run, dirs.root, ['apt-get', 'clean']);
          }),
        );
        return { requested: packages.length };
      });
    },
  };
}
