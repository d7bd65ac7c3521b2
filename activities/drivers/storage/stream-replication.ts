/**
 * Replication between hosts over the network, each side's command on its own host: the steps a
 * volume workflow takes, one activity each, on the NAS and on the compute host alike. The receiving
 * host listens on its own address (IMGFLOW_STREAM_ADDRESS) for the one sender holding the pass's
 * token and runs `zfs recv`; the sending host runs `zfs send` and streams to it. A host without
 * that address set answers `listen` with null, and the workflow keeps to the older way (the
 * receiving host pulls over ssh, or a local pipe).
 */
import { ApplicationFailure } from '@temporalio/common';
import { checkInt, checkName, speedLimit } from '../../../common/names.js';
import type { Logger } from '../../../lib/logger.js';
import { checkSnapshotName } from '../naming.js';
import {
  checkEndpoint,
  checkStreamAddress,
  checkToken,
  createStreamReceiver,
  sendStream,
  type Endpoint,
} from '../stream.js';
import type { ReplicatingStorage } from '../types.js';
import { DEFAULT_KEEP } from './snapshots.js';

export interface StreamReplicationDeps {
  store: () => ReplicatingStorage;
  /** This host's IMGFLOW_STREAM_ADDRESS, as the worker's settings hold it. */
  address: string | undefined;
  logger: Logger;
  /** Wraps each receive (the NAS's limit on concurrent pulls). */
  slot?: <T>(fn: () => Promise<T>) => Promise<T>;
}

export function createStreamReplication({ store, address: given, logger, slot = (fn) => fn() }: StreamReplicationDeps) {
  const address = checkStreamAddress(given);
  const receiver = createStreamReceiver(logger);

  return {
    /** Opens this host's port for the pass's sender; null where streams do not go over the network. */
    listen: async (input: { token: string; waitSeconds: number }): Promise<Endpoint | null> => {
      if (!address) return null;
      return receiver.listen({
        address,
        token: checkToken('token', input.token),
        timeoutMs: checkInt('waitSeconds', input.waitSeconds, 1, 3600) * 1000,
      });
    },

    /** Waits for the sender and receives its stream into the volume (rolled back to the common snapshot first). */
    receive: async (input: { volume: string; token: string }): Promise<{ bytes: number }> => {
      const volume = checkName('volume', input.volume);
      const token = checkToken('token', input.token);
      // The listener lives in this worker only: a retry elsewhere, or after a restart, cannot finish the pass.
      if (!receiver.has(token))
        throw ApplicationFailure.nonRetryable(
          'no listener for this transfer on this host (the worker restarted?)',
          'TransferLost',
        );
      let bytes = 0;
      await slot(() =>
        store().receiveFrom(volume, async (consumer) => (bytes = (await receiver.receive({ token, consumer })).bytes)),
      );
      return { bytes };
    },

    send: async (
      input: Endpoint & { volume: string; token: string; from?: string; to: string; bytesPerSecond?: number },
    ): Promise<{ bytes: number }> => {
      const volume = checkName('volume', input.volume);
      const snapshots = {
        ...(input.from ? { from: checkSnapshotName('from', input.from) } : {}),
        to: checkSnapshotName('to', input.to),
      };
      const rate = speedLimit(input.bytesPerSecond);
      return sendStream(logger, {
        ...checkEndpoint(input),
        token: checkToken('token', input.token),
        producer: store().sendArgv(volume, snapshots),
        ...rate,
      });
    },

    snapshot: async (input: { volume: string; name: string }): Promise<string> => {
      return store().snapshot(checkName('volume', input.volume), checkSnapshotName('name', input.name));
    },

    /** imgflow's snapshots of the volume here, oldest first; none when the volume is not here. */
    snapshots: async (input: { volume: string }): Promise<string[]> => {
      const volume = checkName('volume', input.volume);
      return (await store().exists(volume)) ? store().listSnapshots(volume) : [];
    },

    prune: async (input: { volume: string; keep?: number }): Promise<string[]> => {
      return store().pruneSnapshots(checkName('volume', input.volume), input.keep ?? DEFAULT_KEEP);
    },
  };
}

export type StreamReplication = ReturnType<typeof createStreamReplication>;
