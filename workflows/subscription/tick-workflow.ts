import { getExternalWorkflowHandle } from '@temporalio/workflow';
import { subscriptionWorkflowId, syncRequestSignal } from './messages.js';

/** Started by the subscription's Schedule: asks the entity for a sync, skipped if one is running. */
export async function subscriptionTickWorkflow(input: { subscription: string }): Promise<void> {
  await getExternalWorkflowHandle(subscriptionWorkflowId(input.subscription)).signal(syncRequestSignal, {
    by: 'schedule',
    reason: 'scheduled',
    skipIfBusy: true,
  });
}
