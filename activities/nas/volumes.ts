/**
 * NAS side of clone-to-compute, on queue `nas.<host>`: per-VM copy-on-write volumes cloned from
 * stored versions, exported to one compute host, snapshotted and pulled back in sync mode. The
 * drivers come from this worker's settings; every activity looks before it acts, so a retry
 * after a crash finishes what the first attempt began.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkHost, checkName, speedLimit, InputError } from '../../common/names.js';
import { nasSettings, paths, type Config, type NasExportSettings, type NasSettings } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import {
  createExport,
  createPipe,
  createStorage,
  createZfsStorage,
  replicate,
  type ExportConfig,
  type ExportInfo,
  type Pipe,
  type ReplicatingStorage,
  type StorageConfig,
  type StorageDriver,
  type VolumeInfo,
} from '../drivers/index.js';
import { checkSnapshotName } from '../drivers/naming.js';
import { createStreamReplication } from '../drivers/storage/stream-replication.js';
import { checkDataset } from '../drivers/storage/zfs.js';
import type { Run } from '../runner.js';
import { heartbeat, remoteRun } from '../shared/index.js';
import type { NasDeps } from './index.js';

export interface NasVolumeDeps extends NasDeps {
  /** Carries `zfs send | zfs recv` for pulls; made on demand when absent. */
  pipe?: Pipe;
}

export interface ClonedVolume extends VolumeInfo {
  storage: 'qcow2' | 'zfs';
  /** The store's root: a directory (qcow2) or the parent dataset (zfs), for sync pulls. */
  root: string;
}

export interface CloneRequest {
  volume: string;
  image: string;
  version: string;
  /** The stored version's file on this NAS. */
  source: string;
  sizeBytes?: number;
}

export interface PullResult {
  snapshot: string;
  from?: string;
  sent: boolean;
  durationMs: number;
  pruned: string[];
}

/** The store: qcow2 files under `<home>/nas/<host>/`, or ZFS under IMGFLOW_NAS_POOL. */
export function nasStorageConfig(run: Run, config: Config, settings: NasSettings, pipe?: Pipe): StorageConfig {
  if (settings.pool)
    return { kind: 'zfs', run, ...(pipe ? { pipe } : {}), root: checkDataset('IMGFLOW_NAS_POOL', settings.pool) };
  return { kind: 'qcow2', run, root: paths(config).nas(config.host) };
}

/** The exporter: none (local path) unless IMGFLOW_NAS_EXPORT names tgt or nbd. */
export function nasExportConfig(
  run: Run,
  config: Config,
  settings: NasExportSettings,
  storage: StorageDriver,
): ExportConfig {
  switch (settings.kind) {
    case 'tgt':
      // A host's own tgtd (one per network namespace) answers on its own control port.
      return { ...settings, run, nas: config.host };
    case 'nbd':
      return { ...settings, run, stateDir: path.join(paths(config).nas(config.host), 'nbd') };
    case 'none':
      return { kind: 'none', storage };
  }
}

function rootOf(config: StorageConfig): string {
  return config.root;
}

export function createNasVolumeActivities({ run, config, pipe, settings = nasSettings({}) }: NasVolumeDeps) {
  const storageConfig = nasStorageConfig(
    run,
    config,
    settings,
    pipe ?? (settings.pool ? createPipe(createLogger('imgflow-nas')) : undefined),
  );
  const storage = createStorage(storageConfig);
  const exporter = createExport(nasExportConfig(run, config, settings.export, storage));
  // Pulls on this NAS at once; more wait for a slot, so many volumes' syncs never swamp its disks.
  // The count lives in the NAS's worker and nowhere else: one worker serves a NAS, a worker that
  // dies takes its slots with it, and the pulls it ran are retried by their volumes' workflows, so
  // no slot outlives its holder (as a semaphore kept in a workflow or a file could). A waiting
  // pull heartbeats, so a NAS that goes away is noticed while it waits.
  const pullLimit = settings.syncLimit;
  let pulling = 0;

  async function withPullSlot<T>(fn: () => Promise<T>): Promise<T> {
    while (pulling >= pullLimit) {
      heartbeat({ waiting: 'a sync slot', pulling });
      await sleep(500);
    }
    pulling++;
    try {
      return await fn();
    } finally {
      pulling--;
    }
  }

  async function requireVolume(volume: string): Promise<VolumeInfo> {
    const found = await storage.describe(checkName('volume', volume));
    if (!found) throw new Error(`volume ${volume} does not exist on ${config.host}`);
    return found;
  }

  function replicating(): ReplicatingStorage {
    if (storage.kind !== 'zfs')
      throw new InputError(
        'sync',
        `a NAS storing on ZFS (${config.host} stores qcow2 files; set IMGFLOW_NAS_POOL)`,
        true,
      );
    return storage as ReplicatingStorage;
  }

  const streams = createStreamReplication({
    store: replicating,
    address: settings.streamAddress,
    logger: createLogger('imgflow-nas'),
    slot: withPullSlot,
  });

  // One import of a base at a time: maps of a new version at once all wait for the same import,
  // where each would otherwise take another's half-done import for a stale one and redo it under
  // it (on ZFS the base could end up snapshotted without its disk). One worker serves a NAS, so
  // the map of imports running lives here, like the pull slots.
  const importing = new Map<string, Promise<void>>();

  function importOnce(base: { image: string; version: string }, source: string): Promise<void> {
    const key = `${base.image}:${base.version}`;
    let job = importing.get(key);
    if (!job) {
      job = (async () => {
        if (!(await storage.describeBase(base))) await storage.importBase({ ...base, source });
      })().finally(() => importing.delete(key));
      importing.set(key, job);
    }
    return job;
  }

  async function clone(input: CloneRequest): Promise<ClonedVolume> {
    const base = { image: checkName('image', input.image), version: checkName('version', input.version) };
    checkName('volume', input.volume);
    const store = paths(config).nas(config.host);
    const source = path.resolve(input.source);
    if (!source.startsWith(`${store}/store/`))
      throw new InputError('source', `a stored version file under ${store}/store`, input.source);
    await importOnce(base, source);
    const cloned = await storage.clone({
      volume: input.volume,
      base,
      ...(input.sizeBytes === undefined ? {} : { sizeBytes: input.sizeBytes }),
    });
    return { ...cloned, storage: storage.kind, root: rootOf(storageConfig) };
  }

  function exportTo(volume: VolumeInfo, initiator: string | undefined): Promise<ExportInfo> {
    return exporter.export({
      volume: volume.volume,
      devicePath: volume.devicePath,
      format: volume.format,
      ...(initiator ? { initiator } : {}),
    });
  }

  return {
    /**
     * The volume cloned copy-on-write from a stored version; the version's file is imported as a
     * base first (once). An existing clone of the same base is returned as it is.
     */
    volumeClone: clone,

    /** Offers the volume to one initiator only; an export to another is narrowed to this one. */
    async volumeExport(input: { volume: string; initiator?: string }): Promise<ExportInfo> {
      return exportTo(await requireVolume(input.volume), input.initiator);
    },

    /**
     * volumeClone then volumeExport as one step, so a map makes one round trip to its NAS, and the
     * export serves what the clone answered without looking the volume up again.
     */
    async volumeCloneExport(
      input: CloneRequest & { initiator: string },
    ): Promise<{ cloned: ClonedVolume; exported: ExportInfo }> {
      const cloned = await clone(input);
      return { cloned, exported: await exportTo(cloned, input.initiator) };
    },

    async volumeUnexport(input: { volume: string }): Promise<void> {
      await exporter.unexport(checkName('volume', input.volume));
    },

    /** Ends any export, then removes the clone and its snapshots; a volume already gone is fine. */
    async volumeDestroy(input: { volume: string }): Promise<void> {
      await exporter.unexport(checkName('volume', input.volume));
      await storage.destroy(input.volume);
    },

    /**
     * A volume's clone moved aside under `aside` (kept with its writes, no longer served), freeing
     * its name for a clone of another base; its export ends first. Done already is fine.
     */
    async volumeSetAside(input: { volume: string; aside: string }): Promise<{ aside?: string }> {
      await exporter.unexport(checkName('volume', input.volume));
      const aside = await storage.setAside(input.volume, input.aside);
      return aside ? { aside } : {};
    },

    /** The snapshot the node's first copy is received from (name chosen by the workflow, so retries agree). */
    async volumeSnapshot(input: { volume: string; name: string }): Promise<string> {
      await requireVolume(input.volume);
      return replicating().snapshot(input.volume, checkSnapshotName('name', input.name));
    },

    /**
     * Pulls the node's writes back: a snapshot on the node, sent incrementally from the newest
     * snapshot both share, then both sides pruned to imgflow's newest three. `bytesPerSecond` is
     * the volume's upload speed.
     */
    async volumePull(input: {
      volume: string;
      computeHost: string;
      nodeRoot: string;
      snapshot: string;
      bytesPerSecond?: number;
    }): Promise<PullResult> {
      const target = replicating();
      const remote = remoteRun(run, config.host, checkHost('computeHost', input.computeHost), settings.syncLocal);
      const source = createZfsStorage({ run: remote.run, root: checkDataset('nodeRoot', input.nodeRoot) });
      const started = Date.now();
      const rate = speedLimit(input.bytesPerSecond);
      const snapshot = checkSnapshotName('snapshot', input.snapshot);
      const result = await withPullSlot(() =>
        replicate({
          volume: checkName('volume', input.volume),
          source,
          target,
          sourceCommand: remote.wrap,
          snapshot,
          ...rate,
        }),
      );
      return {
        snapshot: result.snapshot,
        ...(result.from ? { from: result.from } : {}),
        sent: result.sent,
        durationMs: Date.now() - started,
        pruned: [...result.pruned.source, ...result.pruned.target],
      };
    },

    // Sync over the network (see stream-replication.ts): the NAS sends the node's first copy and receives its pulls.
    volumeStreamListen: streams.listen,
    volumeStreamReceive: streams.receive,
    volumeStreamSend: streams.send,
    volumeSnapshots: streams.snapshots,
    volumePrune: streams.prune,

    /** imgflow's volumes and exports on this NAS, for listings and leak checks. */
    async volumeList(): Promise<{ volumes: string[]; exports: ExportInfo[] }> {
      return { volumes: await storage.list(), exports: await exporter.list() };
    },

    async volumeDescribe(input: { volume: string }): Promise<{ volume?: VolumeInfo; export?: ExportInfo }> {
      const volume = await storage.describe(checkName('volume', input.volume));
      const exported = await exporter.find(input.volume);
      return { ...(volume ? { volume } : {}), ...(exported ? { export: exported } : {}) };
    },

    /** How this NAS exports volumes (none: a local path; tgt: iSCSI; nbd), for clients that need a block device. */
    async volumeExportKind(): Promise<{ export: ExportInfo['kind'] }> {
      return { export: exporter.kind };
    },
  };
}

export type NasVolumeActivities = ReturnType<typeof createNasVolumeActivities>;
