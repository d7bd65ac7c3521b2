/** The lineage's updates that run activities: retention (gc), remove and pack, on the NAS that holds the files. */
import { patched, proxyActivities } from '@temporalio/workflow';
import type { NasPackActivities } from '../../activities/nas/pack.js';
import type { NasRetentionActivities } from '../../activities/nas/retention.js';
import { packNote, timeStamp, type VersionRecord } from '../../common/lineage.js';
import { queues } from '../../common/queues.js';
import { volumeMap, type Lineage } from './lineage.js';
import {
  DEFAULT_KEEP,
  type GcInput,
  type GcResult,
  type PackInput,
  type PackOutcome,
  type RemoveInput,
} from './messages.js';
import { planPack, recordPack } from './packs.js';
import { removalTargets, retentionPlan } from './retention.js';

const nasOptions = {
  scheduleToStartTimeout: '10m',
  startToCloseTimeout: '1h',
  retry: { maximumAttempts: 5, nonRetryableErrorTypes: ['InputError'] },
};
const retentionOn = (host: string) =>
  proxyActivities<NasRetentionActivities>({ taskQueue: queues.nas(host), ...nasOptions });
const packOn = (host: string) => proxyActivities<NasPackActivities>({ taskQueue: queues.nas(host), ...nasOptions });

/** Deletes the stored files of versions already marked removed, on each NAS that holds them. */
async function deleteStored(image: string, versions: VersionRecord[]): Promise<number> {
  let files = 0;
  for (const v of versions) {
    for (const host of new Set(v.artifacts.map((a) => a.host)))
      files += (await retentionOn(host).removeStoredVersion({ image, version: v.id })).files;
  }
  return files;
}

export async function gc(lineage: Lineage, input: GcInput, at: string): Promise<GcResult> {
  const keep = input.keep ?? DEFAULT_KEEP;
  const plan = retentionPlan(lineage, keep, input.volumes ? volumeMap(input.volumes) : undefined);
  const result = {
    keep,
    dryRun: Boolean(input.dryRun),
    removed: plan.remove.map((v) => v.id),
    kept: plan.kept,
    files: 0,
  };
  if (input.dryRun) return result;
  lineage.noteVolumes(input.volumes);
  if (!plan.remove.length) return result;
  lineage.markRemoved(plan.remove, input.by, `retention (newest ${keep} and referenced versions kept)`, at);
  return { ...result, files: await deleteStored(lineage.state.image, plan.remove) };
}

export async function remove(
  lineage: Lineage,
  input: RemoveInput,
  at: string,
): Promise<{ removed: string[]; files: number }> {
  const targets = removalTargets(lineage, input);
  lineage.noteVolumes(input.volumes);
  lineage.markRemoved(targets, input.by, 'imgflow remove', at);
  return { removed: targets.map((v) => v.id), files: await deleteStored(lineage.state.image, targets) };
}

export async function pack(lineage: Lineage, input: PackInput, at: string): Promise<PackOutcome> {
  const { version, name, kind, root } = planPack(lineage, input);
  // Lineages that packed before VM bases existed published every version as a boot directory.
  const vm = kind === 'vm' && patched('pack-vm');
  const host = vm ? root.host : (version.artifacts.find((a) => a.format === 'squashfs') ?? version.artifacts[0]!).host;
  const activities = packOn(host);
  const done = await (vm ? activities.packBase : activities.packBoot)({
    image: lineage.state.image,
    version: version.id,
    tag: input.tag,
    name,
    stamp: timeStamp(new Date(at)),
    artifacts: version.artifacts.filter((a) => a.host === host),
    ...(version.allowPasswordHashes ? { allowPasswordHashes: true } : {}),
  });
  const record = recordPack(lineage, input, name, version, vm ? 'vm' : 'netboot', done, at);
  const note = packNote(record);
  return {
    name,
    ...record,
    ...(done.movedAside ? { movedAside: done.movedAside } : {}),
    ...(done.root ? { root: done.root } : {}),
    ...(note ? { note } : {}),
  };
}
