/** Failures as the one line an entity records or an update answers. */
import { TimeoutType } from '@temporalio/common';
import { ActivityFailure, ChildWorkflowFailure, TimeoutFailure } from '@temporalio/workflow';

/**
 * The error an activity or a child workflow threw, out of the failures Temporal wraps it in
 * (an activity's failure, a child's, or a child's that failed on an activity's).
 */
export function unwrapFailure(err: unknown): unknown {
  let e = err;
  while ((e instanceof ActivityFailure || e instanceof ChildWorkflowFailure) && e.cause instanceof Error) e = e.cause;
  return e;
}

/** The message and failure type of what was thrown, reaching through Temporal's wrappers. */
export function failureOf(err: unknown): { message: string; type: string } {
  const e = unwrapFailure(err) as (Error & { type?: string }) | undefined;
  return { message: e?.message ?? String(err), type: e?.type ?? e?.name ?? 'Error' };
}

/** The message of a failure, reaching through Temporal's wrappers. */
export function failureMessage(err: unknown): string {
  return failureOf(err).message;
}

/** The first line of a message, for records shown one to a row. */
export function firstLine(message: string): string {
  return message.split('\n')[0]!;
}

/** No worker took the activity within its schedule-to-start timeout: no worker of its queue is running. */
export function noWorkerTook(err: unknown): boolean {
  return (
    err instanceof ActivityFailure &&
    err.cause instanceof TimeoutFailure &&
    err.cause.timeoutType === TimeoutType.SCHEDULE_TO_START
  );
}
