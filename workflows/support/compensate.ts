/** Undo of a saga's steps. */
import { CancellationScope } from '@temporalio/workflow';

export interface UndoStep {
  /** What the step undoes, as a failure report names it. */
  what: string;
  run: () => Promise<unknown>;
}

export interface UndoFailure {
  what: string;
  error: unknown;
}

/**
 * Undoes the steps done, newest first, out of reach of cancellation: a cancelled saga still
 * cleans up. The policy: an undo step that fails is reported and the next one is still tried, so
 * as much as can be undone is; the caller gets every failure (none: everything was undone).
 *
 * `stopAtFirstFailure` is for sagas whose undo steps depend on each other, where going on after
 * a failure would do harm (a subscription's swap: the old image cannot take its name back while
 * the new one still holds it). Everything after the failed step is left for a person.
 */
export async function compensate(
  steps: UndoStep[],
  options: { stopAtFirstFailure?: boolean } = {},
): Promise<UndoFailure[]> {
  return CancellationScope.nonCancellable(async () => {
    const failed: UndoFailure[] = [];
    for (const step of [...steps].reverse()) {
      try {
        await step.run();
      } catch (error) {
        failed.push({ what: step.what, error });
        if (options.stopAtFirstFailure) break;
      }
    }
    return failed;
  });
}
