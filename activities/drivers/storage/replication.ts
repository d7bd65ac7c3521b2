/**
 * Incremental copies of a volume between two ZFS stores: NAS -> compute node when the node keeps
 * a local copy, and node -> NAS when the NAS pulls the node's writes back. Each pass takes a new
 * snapshot on the source, sends it from the newest snapshot both sides share, and prunes both to
 * the newest few; the shared snapshot is always among those kept.
 */
import { InputError } from '../../../common/names.js';
import { newestCommon } from '../../../common/snapshots.js';
import { checkSnapshotName, snapshotName } from '../naming.js';
import type { ReplicatingStorage } from '../types.js';
import { DEFAULT_KEEP } from './snapshots.js';

/** Rewrites an argv to run on another host (e.g. over ssh); identity when both stores are local. */
export type RemoteCommand = (argv: string[]) => string[];

/**
 * `ssh host -- argv`. The remote side joins argv into a shell command line, so every word is
 * checked to be a plain name (dataset, snapshot, option) with nothing a shell would interpret.
 */
export function viaSsh(host: string, sshOptions: string[] = ['-o', 'BatchMode=yes']): RemoteCommand {
  return (argv) => {
    for (const word of [host, ...argv]) {
      if (!/^[A-Za-z0-9@%+=:,./_-]+$/.test(word))
        throw new InputError('remote argv', 'words without shell characters', word);
    }
    return ['ssh', ...sshOptions, '--', host, ...argv];
  };
}

export interface ReplicateInput {
  volume: string;
  source: ReplicatingStorage;
  target: ReplicatingStorage;
  /** How the source's `zfs send` reaches the target's host. */
  sourceCommand?: RemoteCommand;
  /** Name of this pass's snapshot; a retried pass gives the same name and finishes the same pass. */
  snapshot?: string;
  keep?: number;
  /** The stream's rate limit, bytes per second; unlimited when absent. */
  bytesPerSecond?: number;
}

export interface ReplicateResult {
  snapshot: string;
  /** The shared snapshot the stream started from; absent for a full copy. */
  from?: string;
  /** False when the target already had this pass's snapshot. */
  sent: boolean;
  pruned: { source: string[]; target: string[] };
}

export { newestCommon };

export async function replicate(input: ReplicateInput): Promise<ReplicateResult> {
  const { volume, source, target } = input;
  const remote = input.sourceCommand ?? ((argv: string[]) => argv);
  const keep = input.keep ?? DEFAULT_KEEP;
  const snapshot = await source.snapshot(
    volume,
    input.snapshot === undefined ? snapshotName() : checkSnapshotName('snapshot', input.snapshot),
  );
  const targetExists = await target.exists(volume);
  const targetSnapshots = targetExists ? await target.listSnapshots(volume) : [];
  let from: string | undefined;
  let sent = false;
  if (!targetSnapshots.includes(snapshot)) {
    from = newestCommon(await source.listSnapshots(volume), targetSnapshots);
    if (!from && targetExists)
      throw new Error(`volume ${volume}: the copies share no snapshot; a full copy would overwrite the target`);
    const rate = input.bytesPerSecond ? { bytesPerSecond: input.bytesPerSecond } : {};
    await target.receive(volume, remote(source.sendArgv(volume, { ...(from ? { from } : {}), to: snapshot })), rate);
    sent = true;
  }
  const pruned = {
    source: await source.pruneSnapshots(volume, keep),
    target: await target.pruneSnapshots(volume, keep),
  };
  return { snapshot, ...(from ? { from } : {}), sent, pruned };
}
