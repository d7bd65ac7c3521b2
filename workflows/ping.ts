/** Asks one host queue's worker what it is: the liveness check behind `imgflow ping`, and a compute host's initiator for the bridges. */
import { proxyActivities } from '@temporalio/workflow';
import type { ComputeActivities, ComputeInitiator } from '../activities/compute/index.js';
import type { HostActivities, HostFacts } from '../activities/host.js';
import type { NasVolumeActivities } from '../activities/nas/volumes.js';

type NasExport = Awaited<ReturnType<NasVolumeActivities['volumeExportKind']>>;

export async function pingWorkflow(input: {
  queue: string;
  waitSeconds?: number;
  ask?: 'initiator' | 'export';
}): Promise<HostFacts & Partial<ComputeInitiator> & Partial<NasExport>> {
  const { hostFacts, computeInitiator, volumeExportKind } = proxyActivities<
    HostActivities & Pick<ComputeActivities, 'computeInitiator'> & Pick<NasVolumeActivities, 'volumeExportKind'>
  >({
    taskQueue: input.queue,
    scheduleToStartTimeout: `${input.waitSeconds ?? 10}s`,
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 1 },
  });
  const facts = await hostFacts();
  // Only a compute host has an initiator, only a NAS exports; asked only when the caller wants it (older histories never did).
  if (input.ask === 'initiator' && facts.role === 'compute') return { ...facts, ...(await computeInitiator()) };
  if (input.ask === 'export' && facts.role === 'nas') return { ...facts, ...(await volumeExportKind()) };
  return facts;
}
