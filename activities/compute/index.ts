/**
 * Compute-host activities, on queue `compute.<host>`: attaching a volume the NAS exported to this
 * host (kernel iSCSI, a URL qemu opens itself, or a local path), and in sync mode keeping a local
 * ZFS copy received from the NAS. Every activity looks before it acts.
 */
import fs from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/activity';
import { checkHost, checkInt, checkName, speedLimit, InputError } from '../../common/names.js';
import { computeSettings, type ComputeSettings } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import {
  createAttach,
  createPipe,
  createZfsStorage,
  replicate,
  type AttachDriver,
  type Attachment,
  type Pipe,
  type ReplicatingStorage,
} from '../drivers/index.js';
import { checkIqn, checkSnapshotName, DEFAULT_IQN_PREFIX } from '../drivers/naming.js';
import { createStreamReplication } from '../drivers/storage/stream-replication.js';
import { checkDataset } from '../drivers/storage/zfs.js';
import { currentActivity, heartbeat, remoteRun, type ActivityDeps } from '../shared/index.js';

export interface ComputeDeps extends ActivityDeps {
  pipe?: Pipe;
  /** The compute host's settings from its worker's configuration; the embedded defaults when absent. */
  settings?: ComputeSettings;
}

/** What a compute host logs in as, and how it attaches a non-sync volume: a block device (iscsi-kernel) or a URL qemu opens (iscsi-direct). */
export interface ComputeInitiator {
  host: string;
  initiator: string;
  attach: 'iscsi-kernel' | 'iscsi-direct';
}

export interface LocalCopy {
  root: string;
  devicePath: string;
  sizeBytes: number;
  snapshot: string;
}

/**
 * The end of a wait of `bound` ms that spans every attempt of the running activity: a first attempt
 * waits the whole bound from now (its own clock, whatever the server's says); a later one only
 * what is left since the activity was first scheduled.
 */
function overallDeadline(bound: number): number {
  const now = Date.now();
  const info = currentActivity()?.info;
  if (!info) return now + bound;
  return info.attempt <= 1 ? now + bound : Math.min(now + bound, info.scheduledTimestampMs + bound);
}

/** Processes holding `file` open, from /proc: the device is busy while any does. */
async function holders(file: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const fds = await fs.readdir(`/proc/${entry}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      if ((await fs.readlink(`/proc/${entry}/fd/${fd}`).catch(() => '')) === file) {
        pids.push(Number(entry));
        break;
      }
    }
  }
  return pids;
}

export function createComputeActivities({ run, config, pipe, settings = computeSettings({}) }: ComputeDeps) {
  const initiator = checkIqn('IMGFLOW_COMPUTE_INITIATOR', settings.initiator ?? `${DEFAULT_IQN_PREFIX}:${config.host}`);
  const { kernelIscsi } = settings;

  /** The attach kind follows the export's URL; iSCSI goes through the kernel only where configured. */
  function driverFor(url: string): AttachDriver {
    if (url.startsWith('iscsi://'))
      return kernelIscsi
        ? createAttach({ kind: 'iscsi-kernel', run })
        : createAttach({ kind: 'iscsi-direct', run, initiatorName: initiator });
    if (url.startsWith('nbd://')) return createAttach({ kind: 'nbd-direct', run });
    if (url.startsWith('/')) return createAttach({ kind: 'local', run });
    throw new InputError('url', 'iscsi://, nbd:// or an absolute path', url);
  }

  function localStore(): ReplicatingStorage {
    const pool = settings.pool;
    if (!pool)
      throw new InputError(
        'sync',
        `a compute host with a ZFS pool for local copies (set IMGFLOW_COMPUTE_POOL on ${config.host})`,
        true,
      );
    return createZfsStorage({
      run,
      pipe: pipe ?? createPipe(createLogger('imgflow-compute')),
      root: checkDataset('IMGFLOW_COMPUTE_POOL', pool),
    });
  }

  const streams = createStreamReplication({
    store: localStore,
    address: settings.streamAddress,
    logger: createLogger('imgflow-compute'),
  });

  return {
    /** The name this host's initiator logs in with: the one the export admits. */
    async computeInitiator(): Promise<ComputeInitiator> {
      return { host: config.host, initiator, attach: kernelIscsi ? 'iscsi-kernel' : 'iscsi-direct' };
    },

    async computeAttach(input: { volume: string; url: string }): Promise<Attachment> {
      checkName('volume', input.volume);
      return driverFor(input.url).attach(input);
    },

    async computeIsAttached(input: { volume: string; url: string }): Promise<boolean> {
      checkName('volume', input.volume);
      return driverFor(input.url).isAttached(input);
    },

    /** Waits (up to `waitSeconds`) until nothing on this host holds the device open, then detaches. */
    async computeDetach(input: { volume: string; url: string; waitSeconds?: number }): Promise<void> {
      checkName('volume', input.volume);
      const bound = checkInt('waitSeconds', input.waitSeconds ?? 60, 0, 86_400) * 1000;
      if (input.url.startsWith('/')) {
        // One deadline for the whole detach, counted from when it was first asked for: an attempt
        // that retries after some other failure waits only for what is left of it.
        const deadline = overallDeadline(bound);
        for (let busy = await holders(input.url); busy.length; busy = await holders(input.url)) {
          // Still busy at the deadline: another attempt would only wait again. The bound is the bound.
          if (Date.now() > deadline)
            throw ApplicationFailure.nonRetryable(
              `${input.url} is still in use by pid ${busy.join(', ')} after ${bound / 1000}s`,
              'DeviceBusy',
            );
          heartbeat({ waiting: input.url, holders: busy });
          await sleep(500);
        }
      }
      await driverFor(input.url).detach(input);
    },

    /** Sync mode: the node's own copy, received in full from the NAS's snapshot (once), at most at the volume's download speed. */
    async computeReceive(input: {
      volume: string;
      nas: string;
      nasRoot: string;
      snapshot: string;
      bytesPerSecond?: number;
    }): Promise<LocalCopy> {
      const target = localStore();
      const remote = remoteRun(run, config.host, checkHost('nas', input.nas), settings.syncLocal);
      const source = createZfsStorage({ run: remote.run, root: checkDataset('nasRoot', input.nasRoot) });
      const snapshot = checkSnapshotName('snapshot', input.snapshot);
      const rate = speedLimit(input.bytesPerSecond);
      await replicate({
        volume: checkName('volume', input.volume),
        source,
        target,
        sourceCommand: remote.wrap,
        snapshot,
        ...rate,
      });
      const copy = (await target.describe(input.volume))!;
      return {
        root: checkDataset('IMGFLOW_COMPUTE_POOL', settings.pool),
        devicePath: copy.devicePath,
        sizeBytes: copy.sizeBytes,
        snapshot,
      };
    },

    // Sync over the network (see stream-replication.ts): the node receives its first copy and sends its pulls.
    computeStreamListen: streams.listen,
    computeStreamSend: streams.send,
    computeSnapshot: streams.snapshot,
    computeSnapshots: streams.snapshots,
    computePrune: streams.prune,

    /** Sync mode over the network: the node's own copy, received in full from the NAS's stream. */
    async computeStreamReceive(input: { volume: string; token: string; snapshot: string }): Promise<LocalCopy> {
      const received = await streams.receive(input);
      const copy = (await localStore().describe(input.volume))!;
      heartbeat({ received: received.bytes });
      return {
        root: checkDataset('IMGFLOW_COMPUTE_POOL', settings.pool),
        devicePath: copy.devicePath,
        sizeBytes: copy.sizeBytes,
        snapshot: checkSnapshotName('snapshot', input.snapshot),
      };
    },

    /** Removes the node's copy after the final pull; one already gone is fine. */
    async computeDropCopy(input: { volume: string }): Promise<void> {
      await localStore().destroy(checkName('volume', input.volume));
    },
  };
}

export type ComputeActivities = ReturnType<typeof createComputeActivities>;
