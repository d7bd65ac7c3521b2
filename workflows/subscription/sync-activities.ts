/** The activities a sync runs: on the control queue (the list) and on its site's cloud queue (the registry), each with the patience its step needs. */
import { proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { CloudActivities } from '../../activities/cloud/index.js';
import type { ListedImage } from '../../activities/cloud/imagelist.js';
import { CONTROL_QUEUE, queues } from '../../common/queues.js';
import type { SubscriptionConfig } from '../../common/subscription.js';
import type { SyncInput } from './messages.js';

/** Failures no retry can mend: a refused list, a bad name, a download that did not match. */
const NON_RETRYABLE = ['ImageListError', 'InputError', 'DownloadError', 'ConvertError'];

export function cloudProxies(input: SyncInput) {
  const wait = `${input.subscription.workerWaitSeconds ?? 120}s`;
  const base = (overrides: ActivityOptions): ActivityOptions => ({
    scheduleToStartTimeout: wait,
    // Short enough that a step lost with its worker is retried soon on another.
    startToCloseTimeout: '90s',
    ...overrides,
    retry: {
      initialInterval: '1s',
      backoffCoefficient: 2,
      maximumInterval: '30s',
      maximumAttempts: 5,
      nonRetryableErrorTypes: NON_RETRYABLE,
      ...overrides.retry,
    },
  });
  const taskQueue = queues.cloud(input.subscription.site);
  return {
    control: proxyActivities<CloudActivities>(
      base({ taskQueue: CONTROL_QUEUE, startToCloseTimeout: '5m', retry: { maximumAttempts: 3 } }),
    ),
    registry: proxyActivities<CloudActivities>(base({ taskQueue })),
    /** Undo steps: more patience, since giving up leaves the registry half changed. */
    undo: proxyActivities<CloudActivities>(base({ taskQueue, retry: { maximumAttempts: 20 } })),
    /** Tried once per sync; a refusal (image in use) waits for the next sync. */
    once: proxyActivities<CloudActivities>(base({ taskQueue, retry: { maximumAttempts: 1 } })),
    download: withCredentials(
      input.subscription,
      proxyActivities<CloudActivities>(
        base({ taskQueue, startToCloseTimeout: '2h', heartbeatTimeout: '60s', retry: { maximumAttempts: 3 } }),
      ),
    ),
    convert: proxyActivities<CloudActivities>(
      base({ taskQueue, startToCloseTimeout: '1h', retry: { maximumAttempts: 2 } }),
    ),
    ready: proxyActivities<CloudActivities>(
      base({ taskQueue, startToCloseTimeout: '20m', retry: { maximumAttempts: 2 } }),
    ),
  };
}

export type Proxies = ReturnType<typeof cloudProxies>;

/** Image downloads carry where the subscription's credentials are (the worker sends them to the list's host only). */
function withCredentials(sub: SubscriptionConfig, download: CloudActivities) {
  const credentials = {
    ...(sub.credentialsFile === undefined ? {} : { credentials: { file: sub.credentialsFile, listUrl: sub.url } }),
    ...(sub.oci ? { oci: sub.oci } : {}),
  };
  return { downloadImage: (input: { image: ListedImage }) => download.downloadImage({ ...input, ...credentials }) };
}
