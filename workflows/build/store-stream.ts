/** A built file carried from the builder into a NAS's image store as a stream between the two hosts. */
import { CancellationScope, proxyActivities, uuid4 } from '@temporalio/workflow';
import type { BuilderActivities } from '../../activities/builder/index.js';
import type { NasActivities } from '../../activities/nas/index.js';
import { queues } from '../../common/queues.js';

const STORE_ATTEMPTS = 3;
const STORE_LISTEN_SECONDS = 600;

/** The image store's activities on NAS `store`, for builds and repaired copies alike. */
export const storeActivities = (store: string, maximumAttempts: number) =>
  proxyActivities<NasActivities>({
    taskQueue: queues.nas(store),
    scheduleToStartTimeout: '10m',
    startToCloseTimeout: '2h',
    heartbeatTimeout: '2m',
    retry: { maximumAttempts },
  });

/**
 * Streams one file from the builder into the NAS's store, each side's command on its own host;
 * null when the NAS has it already or takes files over rsync only.
 */
export async function streamToStore(
  builder: Pick<BuilderActivities, 'sendFile'>,
  nas: Pick<NasActivities, 'storeListen' | 'storeReceive'>,
  file: { image: string; version: string; name: string; sha256: string; arch: string; path: string },
): Promise<{ host: string; path: string } | null> {
  const { arch, path, ...stored } = file;
  for (let attempt = 1; ; attempt++) {
    const token = uuid4();
    const endpoint = await nas.storeListen({ ...stored, token, waitSeconds: STORE_LISTEN_SECONDS });
    if (!endpoint) return null;
    // When one side fails, the other is cancelled rather than left waiting for its peer.
    const pair = new CancellationScope();
    try {
      const [received] = await pair.run(() =>
        Promise.all([nas.storeReceive({ ...stored, token }), builder.sendFile({ ...endpoint, arch, path, token })]),
      );
      return received;
    } catch (err) {
      pair.cancel();
      if (attempt >= STORE_ATTEMPTS) throw err;
    }
  }
}
