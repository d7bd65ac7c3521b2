/**
 * One event to one target: the control host's activity makes one attempt at a time, and its retry
 * policy retries with backoff until the target accepts or the rule's bound passes. The outcome
 * goes back to the events workflow for `imgflow notify list`; a delivery given up fails, so the
 * Web UI lists it among failed workflows.
 */
import { ApplicationFailure, getExternalWorkflowHandle, proxyActivities } from '@temporalio/workflow';
import type { NotifyActivities } from '../../activities/control/notify.js';
import { clip } from '../../common/limits.js';
import { CONTROL_QUEUE } from '../../common/queues.js';
import { EVENTS_WORKFLOW_ID, deliveredSignal, type DeliveryInput } from './messages.js';

/** The deepest cause's message: a delivery that timed out says what its last attempt met. */
function lastError(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e?.cause) e = e.cause;
  return clip(e?.message ?? String(err), 500);
}

export async function deliveryWorkflow(input: DeliveryInput): Promise<void> {
  const { deliverEvent } = proxyActivities<NotifyActivities>({
    taskQueue: CONTROL_QUEUE,
    startToCloseTimeout: '1 minute',
    scheduleToCloseTimeout: `${input.deliverFor} seconds`,
    retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes' },
  });
  let error: string | undefined;
  try {
    await deliverEvent({ target: input.target, event: input.event });
  } catch (err) {
    error = lastError(err);
  }
  await getExternalWorkflowHandle(EVENTS_WORKFLOW_ID)
    .signal(deliveredSignal, {
      rule: input.rule,
      eventId: input.event.id,
      ok: error === undefined,
      at: new Date().toISOString(),
      ...(error !== undefined ? { error } : {}),
    })
    .catch(() => undefined);
  if (error !== undefined) throw ApplicationFailure.nonRetryable(`not delivered: ${error}`, 'NotDelivered');
}
