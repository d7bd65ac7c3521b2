/**
 * The hook phase: one hook of the recipe, its argv (or its script, copied in from the recipe's
 * directory and checked against the digest taken when the recipe was read) run isolated in the image.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { checkName, InputError } from '../../../common/names.js';
import type { ActivityDeps } from '../../shared/index.js';
import { buildDirs, loggingRunner, runPhase, takeRoot, type BuildRef, type PhaseResult } from '../phase.js';
import { assertNothingMounted } from '../prepare.js';
import { checkHookInput, type Hook } from '../recipe.js';
import { runInRoot, withTemporaryFile } from '../rootfs.js';

export function createHookActivities({ run: runCommand, config }: ActivityDeps) {
  const run = loggingRunner(runCommand);
  return {
    /** One hook: its argv (or its script, copied in from the recipe's directory) run isolated in the image. */
    async runHook(input: BuildRef & { hook: Hook }): Promise<PhaseResult & { hook: string; layer: string }> {
      const dirs = buildDirs(config, input);
      const hook = checkHookInput(input.hook);
      const phase = `hook-${hook.name}`;
      checkName('hook', phase);
      return runPhase(run, dirs, phase, { hook, arch: input.arch }, async () => {
        await takeRoot(run, dirs);
        await assertNothingMounted(dirs.root);
        if (!hook.file) await runInRoot(run, dirs.root, hook.argv);
        else {
          // The script runs as checked when the recipe was read, or not at all.
          const script = await fs.readFile(hook.file.path);
          const actual = createHash('sha256').update(script).digest('hex');
          if (actual !== hook.file.sha256)
            throw new InputError(
              `hooks.${hook.name}.file`,
              `the script checked with the recipe (${hook.file.sha256})`,
              actual,
            );
          const inside = `/tmp/imgflow-hook-${hook.name}`;
          await withTemporaryFile(dirs.root, inside, script, 0o755, () =>
            runInRoot(run, dirs.root, [inside, ...hook.argv]),
          );
        }
        return { hook: hook.name, layer: hook.layer };
      });
    },
  };
}
