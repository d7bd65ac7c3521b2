/**
 * A staged rollout of one image's channel to a tag (`rollout-<image>@<channel>`, so one at a time
 * per channel): waves of packs and volumes moved, a pause or a test-result gate between them, the
 * channel promoted at the end. Cancelling it stops it where it is (a member mid-move finishes);
 * the `rollback` update stops it and takes back every move, newest first. A rollout that has ended
 * is rolled back by a new run under the same id, given the last progress of the one before.
 */
import { ApplicationFailure, condition, allHandlersFinished, setHandler } from '@temporalio/workflow';
import { checkReason, checkUser } from '../../common/lineage.js';
import { checkRolloutRequest } from '../../common/rollout.js';
import { InputError } from '../../common/names.js';
import { handleUpdate } from '../support/updates.js';
import { isFinal, progressQuery, rollbackUpdate, type RolloutInput, type RolloutProgress } from './messages.js';
import { Rollout, startProgress } from './rollout.js';

export async function rolloutWorkflow(input: RolloutInput): Promise<RolloutProgress> {
  const rollbackOf = input.rollbackOf;
  if (!rollbackOf) checkRolloutRequest(input.request!);
  const rollout = new Rollout(rollbackOf ? rollbackOf.progress : startProgress(input, new Date().toISOString()));
  setHandler(progressQuery, () => rollout.p);
  handleUpdate(
    rollbackUpdate,
    (r) => {
      checkUser('by', r.by);
      if (r.reason !== undefined) checkReason('reason', r.reason);
      if (rollout.rollbackAsked || isFinal(rollout.p.phase) || rollout.p.phase === 'rolling-back')
        throw new InputError(
          'rollout',
          `a rollout that is still going (this one is ${rollout.p.phase})`,
          rollout.p.image,
        );
    },
    (r) => {
      rollout.rollbackAsked = r;
      return rollout.p;
    },
  );
  rollout.publish();

  if (rollbackOf)
    await rollout.rollBack({ by: rollbackOf.by, ...(rollbackOf.reason ? { reason: rollbackOf.reason } : {}) });
  else {
    await rollout.run();
    if (rollout.rollbackAsked) await rollout.rollBack(rollout.rollbackAsked);
  }
  await condition(allHandlersFinished);
  const p = rollout.p;
  // A rollout that stopped short ends failed, so the Web UI and `imgflow rollout status` say so.
  if (p.phase === 'failed' || p.phase === 'rollback-failed')
    throw ApplicationFailure.nonRetryable(
      `rollout of ${p.image}@${p.channel} to ${p.tag}: ${p.error}`,
      'RolloutFailed',
    );
  return p;
}
