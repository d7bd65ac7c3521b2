/** Reads of a lineage's archives, which are files on the control host, through the control queue. */
import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { LineageHistoryActivities } from '../../activities/control/lineage-history.js';
import { CONTROL_QUEUE } from '../../common/queues.js';
import { noWorkerTook } from '../support/failures.js';

/** Runs a read of a lineage archive on the control queue; no control worker to take it is said so. */
export async function readOnControl<T>(
  what: string,
  read: (reader: LineageHistoryActivities) => Promise<T>,
): Promise<T> {
  const reader = proxyActivities<LineageHistoryActivities>({
    taskQueue: CONTROL_QUEUE,
    scheduleToStartTimeout: '1m',
    startToCloseTimeout: '1m',
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError'] },
  });
  try {
    return await read(reader);
  } catch (err) {
    if (noWorkerTook(err)) {
      throw ApplicationFailure.nonRetryable(
        `no worker on queue ${CONTROL_QUEUE} read ${what} within a minute: is a worker of role control running?`,
        'NoControlWorker',
      );
    }
    throw err;
  }
}
