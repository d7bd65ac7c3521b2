/**
 * The demo: real work on two host queues. A builder makes a small base image, the NAS takes it
 * into its store (digest checked), clones it copy-on-write and checks the clone reads through.
 */
import { proxyActivities, setCurrentDetails, upsertSearchAttributes, uuid4 } from '@temporalio/workflow';
import type { BuilderActivities } from '../activities/builder/index.js';
import type { NasActivities } from '../activities/nas/index.js';
import { queues } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';

export interface DemoInput {
  image: string;
  volume: string;
  arch: string;
  nas: string;
  sizeMiB: number;
  /** How long a step may wait for a worker of its host before failing. */
  workerWaitSeconds?: number;
}

export interface DemoSummary {
  image: string;
  version: string;
  base: { host: string; path: string; sha256: string; bytes: number; virtualBytes: number };
  volume: {
    name: string;
    nas: string;
    path: string;
    actualBytes: number;
    virtualBytes: number;
    backingFile?: string;
    readsThrough: boolean;
  };
}

export async function demoWorkflow(input: DemoInput): Promise<DemoSummary> {
  const version = `v${uuid4().slice(0, 8)}`;
  const wait = `${input.workerWaitSeconds ?? 60}s`;
  const builder = proxyActivities<BuilderActivities>({
    taskQueue: queues.builder(input.arch),
    scheduleToStartTimeout: wait,
    startToCloseTimeout: '10m',
    heartbeatTimeout: '10s',
    retry: { maximumAttempts: 5 },
  });
  const nas = proxyActivities<NasActivities>({
    taskQueue: queues.nas(input.nas),
    scheduleToStartTimeout: wait,
    startToCloseTimeout: '10m',
    heartbeatTimeout: '10s',
    retry: { maximumAttempts: 5 },
  });
  upsertSearchAttributes([{ key: SA.version, value: version }]);

  setCurrentDetails(`**building** ${input.image}:${version} on ${queues.builder(input.arch)}`);
  const base = await builder.createBaseImage({ image: input.image, version, arch: input.arch, sizeMiB: input.sizeMiB });

  setCurrentDetails(`**importing** ${input.image}:${version} into the store of ${queues.nas(input.nas)}`);
  const stored = await nas.storeFile({
    image: input.image,
    version,
    name: `${input.image}-${version}.qcow2`,
    source: { host: base.host, path: base.path },
    sha256: base.sha256,
  });

  setCurrentDetails(`**cloning** volume ${input.volume} from ${input.image}:${version}`);
  await nas.cloneVolume({ volume: input.volume, base: stored.path });
  const checked = await nas.checkVolume({ volume: input.volume });

  setCurrentDetails(
    `**done** ${input.image}:${version} (${base.sha256.slice(0, 12)}) cloned as ${input.volume} on ${input.nas}: ` +
      `${checked.actualBytes} bytes on disk for ${checked.virtualBytes} virtual, reads through: ${checked.readsThrough}`,
  );
  return {
    image: input.image,
    version,
    base: { ...base, path: stored.path },
    volume: {
      name: input.volume,
      nas: input.nas,
      path: checked.path,
      actualBytes: checked.actualBytes,
      virtualBytes: checked.virtualBytes,
      readsThrough: checked.readsThrough,
      ...(checked.backingFile ? { backingFile: checked.backingFile } : {}),
    },
  };
}
