/**
 * What changed between two versions of an image: the NAS that stores both reads their manifests
 * and compares them. A short workflow so the CLI need not reach the NAS's files itself.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { DiffSide, NasDiffActivities, VersionDiff } from '../activities/nas/diff.js';
import { queues } from '../common/queues.js';

export interface DiffInput {
  image: string;
  /** The NAS whose store holds both versions' manifests. */
  host: string;
  from: DiffSide;
  to: DiffSide;
  /** At most this many paths per list of files. */
  limit?: number;
}

export async function diffWorkflow(input: DiffInput): Promise<VersionDiff> {
  const nas = proxyActivities<NasDiffActivities>({
    taskQueue: queues.nas(input.host),
    scheduleToStartTimeout: '5m',
    startToCloseTimeout: '30m',
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError', 'ManifestChanged'] },
  });
  return nas.diffManifests({ from: input.from, to: input.to, ...(input.limit ? { limit: input.limit } : {}) });
}
