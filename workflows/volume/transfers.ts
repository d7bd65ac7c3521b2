/**
 * A volume's bytes between its NAS and its compute node in sync mode: the node's first copy and
 * the pulls of its writes back, streamed between the two hosts where the receiver listens.
 */
import { ApplicationFailure, uuid4 } from '@temporalio/workflow';
import type { ComputeActivities, LocalCopy } from '../../activities/compute/index.js';
import type { NasVolumeActivities, PullResult } from '../../activities/nas/volumes.js';
import { newestCommon } from '../../common/snapshots.js';
import type { VolumeState } from './messages.js';

type NasProxy = Pick<
  NasVolumeActivities,
  'volumeStreamListen' | 'volumeStreamSend' | 'volumeStreamReceive' | 'volumePull' | 'volumeSnapshots' | 'volumePrune'
>;
type ComputeProxy = Pick<
  ComputeActivities,
  | 'computeStreamListen'
  | 'computeStreamReceive'
  | 'computeStreamSend'
  | 'computeReceive'
  | 'computeSnapshot'
  | 'computeSnapshots'
  | 'computePrune'
>;

/** Streams between hosts go over the network where the receiving host listens (histories from before call the older activities). */
export const SYNC_OVER_NETWORK = 'sync-over-network';
/** How much longer than a step's wait a receiving host keeps its port open for the sender. */
const STREAM_GRACE_SECONDS = 60;

/**
 * A transfer's rate limit from the volume's speeds: download is the node's copy from the NAS,
 * upload the pulls back. A change applies from the next transfer on. Only the activities' inputs
 * gain a field (the workflow's commands are the same), so saved histories replay unchanged.
 */
export function rate(bytesPerSecond: number | undefined): { bytesPerSecond?: number } {
  return bytesPerSecond ? { bytesPerSecond } : {};
}

/**
 * The node's first copy, streamed by the NAS to the node over the network, each side's command
 * on its own host, behind a one-time token; a node that takes no streams (null from listen)
 * receives it the older way, pulling over ssh.
 */
export async function copyToNode(
  s: VolumeState,
  nas: NasProxy,
  compute: ComputeProxy,
  nasRoot: string,
  snapshot: string,
): Promise<LocalCopy> {
  const token = uuid4();
  const endpoint = await compute.computeStreamListen({ token, waitSeconds: s.waitSeconds + STREAM_GRACE_SECONDS });
  if (!endpoint)
    return compute.computeReceive({ volume: s.volume, nas: s.nas!, nasRoot, snapshot, ...rate(s.speeds.download) });
  const [copy] = await Promise.all([
    compute.computeStreamReceive({ volume: s.volume, token, snapshot }),
    nas.volumeStreamSend({ volume: s.volume, to: snapshot, ...endpoint, token, ...rate(s.speeds.download) }),
  ]);
  return copy;
}

/**
 * A pull over the network: a snapshot on the node, streamed by the node to the NAS from the
 * newest snapshot both share, then both pruned. A NAS that takes no streams pulls over ssh.
 */
export async function pullOverNetwork(
  s: VolumeState,
  nas: NasProxy,
  compute: ComputeProxy,
  snapshot: string,
): Promise<PullResult> {
  const volume = s.volume;
  const token = uuid4();
  const endpoint = await nas.volumeStreamListen({ token, waitSeconds: s.waitSeconds + STREAM_GRACE_SECONDS });
  if (!endpoint)
    return nas.volumePull({
      volume,
      computeHost: s.computeHost!,
      nodeRoot: s.sync!.nodeRoot!,
      snapshot,
      ...rate(s.speeds.upload),
    });
  const started = Date.now();
  await compute.computeSnapshot({ volume, name: snapshot });
  const [onNode, onNas] = await Promise.all([compute.computeSnapshots({ volume }), nas.volumeSnapshots({ volume })]);
  const from = newestCommon(onNode, onNas);
  const sent = !onNas.includes(snapshot);
  if (sent) {
    if (!from)
      throw ApplicationFailure.nonRetryable(
        `volume ${volume}: the copies share no snapshot; a full copy would overwrite the NAS's`,
        'SyncFailed',
      );
    await Promise.all([
      nas.volumeStreamReceive({ volume, token }),
      compute.computeStreamSend({ volume, from, to: snapshot, ...endpoint, token, ...rate(s.speeds.upload) }),
    ]);
  }
  const pruned = [...(await compute.computePrune({ volume })), ...(await nas.volumePrune({ volume }))];
  return { snapshot, ...(sent && from ? { from } : {}), sent, durationMs: Date.now() - started, pruned };
}
