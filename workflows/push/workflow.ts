/**
 * Pushes one stored version of an image to an OCI registry and signs it, on the NAS that stores it.
 * Pushing the same version again uploads nothing and adds no second signature, so a retried or
 * repeated push is harmless.
 */
import { ApplicationFailure, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { OciPushActivities } from '../../activities/oci/index.js';
import { queues } from '../../common/queues.js';
import { checkPushInput, type PushInput, type PushResult } from './messages.js';

export async function pushWorkflow(input: PushInput): Promise<PushResult> {
  try {
    checkPushInput(input);
  } catch (error) {
    throw ApplicationFailure.nonRetryable((error as Error).message, 'InputError');
  }
  const nas = proxyActivities<OciPushActivities>({
    taskQueue: queues.nas(input.host),
    scheduleToStartTimeout: `${input.workerWaitSeconds ?? 300}s`,
    startToCloseTimeout: '2h',
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError', 'OciError'] },
  });
  setCurrentDetails(`**pushing** ${input.version.image}:${input.version.version} to ${input.to}`);
  const result = await nas.pushVersionToRegistry({
    to: input.to,
    version: input.version,
    artifacts: input.artifacts,
    signingKeyFile: input.signingKeyFile,
    ...(input.access ? { access: input.access } : {}),
  });
  setCurrentDetails(
    `**pushed** ${result.reference}: ${result.uploadedBlobs} blobs uploaded, ${result.signed ? 'signed' : 'signature already there'}`,
  );
  return result;
}
