/**
 * The prepare phase and its checks: preparation of the tree (recording the private directories and
 * sharing in the build's image record), validation against the same rules, and a fix that
 * prepares again where validation finds breaches. The rules themselves are in ../prepare.ts and
 * ../validate.ts.
 */
import type { ActivityDeps } from '../../shared/index.js';
import {
  buildDirs,
  loggingRunner,
  requireRoot,
  runPhase,
  takeRoot,
  writeJsonAtomic,
  type BuildRef,
  type PhaseResult,
} from '../phase.js';
import { assertNothingMounted, prepareRoot } from '../prepare.js';
import { checkPrepareInput, type PrepareOptions } from '../recipe.js';
import { fixRoot, validateRoot, type Breach } from '../validate.js';

export function createPrepareActivities({ run: runCommand, config }: ActivityDeps) {
  const run = loggingRunner(runCommand);
  return {
    /** Preparation; records private directories and sharing in the build's image manifest. */
    async prepare(input: BuildRef & { prepare: PrepareOptions }): Promise<
      PhaseResult & {
        emptied: number;
        truncatedLogs: number;
        removedIdentity: number;
        disabledServices: string[];
        lockedPasswords: number;
      }
    > {
      const dirs = buildDirs(config, input);
      const options = checkPrepareInput(input.prepare);
      return runPhase(run, dirs, 'prepare', { options, arch: input.arch }, async () => {
        await takeRoot(run, dirs);
        const summary = await prepareRoot(dirs.root, options);
        await writeJsonAtomic(dirs.record, {
          private: summary.private,
          shared: summary.shared,
          hostname: options.hostname ?? null,
          network: options.network,
        });
        return {
          emptied: summary.emptied.length,
          truncatedLogs: summary.truncatedLogs,
          removedIdentity: summary.removedIdentity.length,
          disabledServices: summary.disabledServices,
          lockedPasswords: summary.lockedPasswords,
        };
      });
    },

    /** The prepare rules' breaches in the current tree (read-only). */
    async validate(input: BuildRef & { prepare: PrepareOptions }): Promise<{ ok: boolean; breaches: Breach[] }> {
      const dirs = buildDirs(config, input);
      await requireRoot(dirs);
      const breaches = await validateRoot(dirs.root, checkPrepareInput(input.prepare));
      return { ok: breaches.length === 0, breaches };
    },

    /** Prepares again where validation finds breaches; reports before and after. */
    async fix(
      input: BuildRef & { prepare: PrepareOptions },
    ): Promise<{ ok: boolean; fixed: number; remaining: Breach[] }> {
      const dirs = buildDirs(config, input);
      await takeRoot(run, dirs);
      await assertNothingMounted(dirs.root);
      const { before, after } = await fixRoot(dirs.root, checkPrepareInput(input.prepare));
      return { ok: after.length === 0, fixed: before.length - after.length, remaining: after };
    },
  };
}
