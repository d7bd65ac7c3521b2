/** How an entity wires an update: a validator that rejects before anything is recorded, and a handler whose failures fail the update only. */
import type { UpdateDefinition } from '@temporalio/common';
import { ApplicationFailure, setHandler } from '@temporalio/workflow';
import { failureOf } from './failures.js';

/**
 * Sets the validator and handler of one update. Whatever the handler throws fails this update
 * only, as a non-retryable failure with the message and type of what was thrown (reached through
 * an activity's failure); any other error thrown in a handler would fail the workflow task.
 */
export function handleUpdate<I, O>(
  def: UpdateDefinition<O, [I]>,
  validate: (input: I) => void,
  apply: (input: I) => Promise<O> | O,
): void {
  setHandler(
    def,
    async (input: I) => {
      try {
        return await apply(input);
      } catch (err) {
        throw updateFailure(err);
      }
    },
    { validator: (input: I) => validate(input) },
  );
}

/** The failure an update answers with for what its handler threw. */
export function updateFailure(err: unknown): ApplicationFailure {
  if (err instanceof ApplicationFailure && err.nonRetryable) return err;
  const { message, type } = failureOf(err);
  return ApplicationFailure.nonRetryable(message, type);
}
