/** The client side of `ping`: a workflow asks a host queue's worker what it is, within a bound. */
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { pingWorkflow } from '../workflows/ping.js';

/** What the worker polling `queue` says about itself; fails in one line when none answers within `waitSeconds`. */
export async function pingQueue(client: Client, queue: string, waitSeconds: number) {
  return client.workflow
    .execute(pingWorkflow, {
      taskQueue: WORKFLOW_QUEUE,
      workflowId: `ping-${queue}-${randomUUID().slice(0, 8)}`,
      args: [{ queue, waitSeconds }],
      // Bounded even when no orchestrator can run it (none polling, or one without this keyring's keys).
      workflowExecutionTimeout: `${waitSeconds + 30}s`,
    })
    .catch((err: unknown) => {
      // The workflow ran and failed (or timed out): nobody took the activity. Any other error is the server's answer.
      throw err instanceof WorkflowFailedError
        ? new Error(`no worker answered on ${queue} within ${waitSeconds}s`)
        : err;
    });
}
