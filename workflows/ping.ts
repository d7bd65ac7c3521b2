/** Asks one host queue's worker what it is: the liveness check behind `imgflow ping`. */
import { proxyActivities } from '@temporalio/workflow';
import type { HostActivities, HostFacts } from '../activities/host.js';

export async function pingWorkflow(input: { queue: string; waitSeconds?: number }): Promise<HostFacts> {
  const { hostFacts } = proxyActivities<HostActivities>({
    taskQueue: input.queue,
    scheduleToStartTimeout: `${input.waitSeconds ?? 10}s`,
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 1 },
  });
  return hostFacts();
}
