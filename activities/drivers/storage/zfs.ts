/**
 * Volumes as ZFS clones of a base snapshot. Two layouts under one parent dataset (`root`):
 * - `dataset`: each base and volume is a filesystem holding one raw disk file (works anywhere,
 *   including userspace ZFS without zvols);
 * - `zvol`: each is a zvol (`/dev/zvol/...`), with a large volblocksize and metadata-only ARC
 *   caching, since the guest's page cache already holds its data.
 * Bases live at `<root>/bases/<image>/<version>`, complete once `@imgflow-base` exists; volumes at
 * `<root>/volumes/<volume>`, tagged with the `org.imgflow:volume` property so that `list` finds
 * imgflow's own only.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkName, InputError } from '../../../common/names.js';
import { exists } from '../../../lib/files.js';
import { CommandError, type Run } from '../../runner.js';
import { checkSnapshotName, snapshotName } from '../naming.js';
import {
  ASIDE_NAME,
  type BaseInfo,
  type BaseRef,
  type Pipe,
  type ReplicatingStorage,
  type VolumeInfo,
} from '../types.js';
import { BASE_SNAPSHOT, DEFAULT_KEEP, ownSnapshots, snapshotsToPrune } from './snapshots.js';

export type ZfsLayout = 'dataset' | 'zvol';

export interface ZfsStorageConfig {
  run: Run;
  /** Carries `zfs send | zfs recv`; only needed to receive. */
  pipe?: Pipe;
  /** Parent dataset, e.g. `tank/imgflow`. */
  root: string;
  layout?: ZfsLayout;
  /** Where zvol device nodes appear. */
  zvolDevices?: string;
  /** How long a new zvol's device node may take to appear. */
  deviceTimeoutMs?: number;
}

export const VOLUME_PROPERTY = 'org.imgflow:volume';
export const BASE_PROPERTY = 'org.imgflow:base';
/** The disk file inside a dataset-layout base or volume. */
export const DISK_FILE = 'disk.raw';
const ZVOL_BLOCK = 128 * 1024;
const GIB = 1024 ** 3;

const DATASET = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/i;

export function checkDataset(field: string, value: unknown): string {
  if (typeof value !== 'string' || !DATASET.test(value) || value.includes('..') || value.length > 200) {
    throw new InputError(field, 'a ZFS dataset name such as tank/imgflow', value);
  }
  return value;
}

function isMissing(error: unknown): boolean {
  return error instanceof CommandError && /does not exist/.test(error.stderrTail);
}

function isBusy(error: unknown): boolean {
  return error instanceof CommandError && /busy/.test(error.stderrTail);
}

export function createZfsStorage(config: ZfsStorageConfig): ReplicatingStorage {
  const { run, pipe } = config;
  const root = checkDataset('root', config.root);
  const layout = config.layout ?? 'dataset';
  const zvolDevices = config.zvolDevices ?? '/dev/zvol';
  const deviceTimeoutMs = config.deviceTimeoutMs ?? 30_000;

  const baseDataset = (base: BaseRef) =>
    `${root}/bases/${checkName('image', base.image)}/${checkName('version', base.version)}`;
  const volumesParent = `${root}/volumes`;
  const volumeDataset = (volume: string) => `${volumesParent}/${checkName('volume', volume)}`;

  /** Properties of a dataset or snapshot by name (`-` where unset); undefined if it does not exist. */
  async function properties(name: string, props: string[]): Promise<Record<string, string> | undefined> {
    try {
      const { stdout } = await run(['zfs', 'get', '-H', '-p', '-o', 'property,value', props.join(','), name]);
      return Object.fromEntries(
        stdout
          .split('\n')
          .filter(Boolean)
          .map((line) => line.split('\t') as [string, string]),
      );
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async function datasetExists(name: string): Promise<boolean> {
    return (await properties(name, ['type'])) !== undefined;
  }

  /** zfs-fuse reports a just-closed dataset busy for a moment; destroy tries a few times. */
  async function destroyDataset(argv: string[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await run(argv);
        return;
      } catch (error) {
        if (isMissing(error)) return;
        if (!isBusy(error) || attempt >= 5) throw error;
        await sleep(500 * attempt);
      }
    }
  }

  /** The disk inside a dataset: its raw file, or the zvol's device node. */
  async function diskPath(dataset: string): Promise<string> {
    if (layout === 'zvol') return path.join(zvolDevices, dataset);
    const mountpoint = (await properties(dataset, ['mountpoint']))?.mountpoint;
    if (!mountpoint || !mountpoint.startsWith('/'))
      throw new Error(`dataset ${dataset} is not mounted at a path (mountpoint ${mountpoint ?? 'unknown'})`);
    return path.join(mountpoint, DISK_FILE);
  }

  async function diskBytes(dataset: string, props: Record<string, string>): Promise<number> {
    if (layout === 'zvol') return Number(props.volsize);
    return (await fs.stat(await diskPath(dataset))).size;
  }

  async function waitForDevice(device: string): Promise<void> {
    const deadline = Date.now() + deviceTimeoutMs;
    while (!(await exists(device))) {
      if (Date.now() > deadline) throw new Error(`${device} did not appear within ${deviceTimeoutMs} ms`);
      await sleep(200);
    }
  }

  async function describeBase(base: BaseRef): Promise<BaseInfo | undefined> {
    const dataset = baseDataset(base);
    const props = await properties(dataset, ['type', 'volsize']);
    if (!props || !(await datasetExists(`${dataset}@${BASE_SNAPSHOT}`))) return undefined;
    return {
      image: base.image,
      version: base.version,
      devicePath: await diskPath(dataset),
      origin: `${dataset}@${BASE_SNAPSHOT}`,
      sizeBytes: await diskBytes(dataset, props),
    };
  }

  async function describe(volume: string): Promise<VolumeInfo | undefined> {
    const dataset = volumeDataset(volume);
    const props = await properties(dataset, ['type', 'origin', 'volsize', VOLUME_PROPERTY]);
    if (!props) return undefined;
    const origin = props.origin && props.origin !== '-' ? { origin: props.origin } : {};
    return {
      volume,
      devicePath: await diskPath(dataset),
      format: 'raw',
      sizeBytes: await diskBytes(dataset, props),
      ...origin,
    };
  }

  async function createBaseDataset(dataset: string, base: BaseRef, source: string): Promise<void> {
    const tag = ['-o', `${BASE_PROPERTY}=${base.image}/${base.version}`];
    if (layout === 'dataset') {
      await run(['zfs', 'create', '-p', ...tag, dataset]);
      return;
    }
    const info = JSON.parse((await run(['qemu-img', 'info', '--output=json', '--', source])).stdout) as Record<
      string,
      unknown
    >;
    const gib = Math.max(1, Math.ceil(Number(info['virtual-size']) / GIB));
    await run([
      'zfs',
      'create',
      '-p',
      '-V',
      `${gib}G`,
      '-o',
      'volblocksize=128K',
      '-o',
      'primarycache=metadata',
      ...tag,
      dataset,
    ]);
    await waitForDevice(await diskPath(dataset));
  }

  /**
   * Grows a clone to `sizeBytes` (zvols: rounded up to whole volblocksize blocks); equal is done,
   * smaller is refused (it would cut the guest's disk).
   */
  async function ensureSize(volume: string, current: VolumeInfo, sizeBytes: number): Promise<VolumeInfo> {
    const wanted = layout === 'zvol' ? Math.ceil(sizeBytes / ZVOL_BLOCK) * ZVOL_BLOCK : sizeBytes;
    if (wanted === current.sizeBytes) return current;
    if (wanted < current.sizeBytes)
      throw new Error(`volume ${volume} is ${current.sizeBytes} bytes; shrinking to ${wanted} is not supported`);
    if (layout === 'zvol') await run(['zfs', 'set', `volsize=${wanted}`, volumeDataset(volume)]);
    else await run(['qemu-img', 'resize', '-q', '-f', 'raw', current.devicePath, String(wanted)]);
    return (await describe(volume))!;
  }

  async function snapshotsOf(dataset: string): Promise<string[]> {
    const { stdout } = await run(['zfs', 'list', '-H', '-t', 'snapshot', '-d', '1', '-o', 'name', dataset]);
    return stdout
      .split('\n')
      .filter((line) => line.startsWith(`${dataset}@`))
      .map((line) => line.slice(dataset.length + 1));
  }

  async function requireVolume(volume: string): Promise<string> {
    const dataset = volumeDataset(volume);
    if (!(await datasetExists(dataset))) throw new Error(`volume ${volume} does not exist in ${root}`);
    return dataset;
  }

  return {
    kind: 'zfs',
    describeBase,
    describe,

    /** A dataset without `@imgflow-base` is a half-done import: it is destroyed and done again. */
    async importBase(input) {
      const current = await describeBase(input);
      if (current) return current;
      const dataset = baseDataset(input);
      if (await datasetExists(dataset)) await destroyDataset(['zfs', 'destroy', '-r', dataset]);
      await createBaseDataset(dataset, input, input.source);
      const target = await diskPath(dataset);
      await run(['qemu-img', 'convert', ...(layout === 'zvol' ? ['-n'] : []), '-O', 'raw', '--', input.source, target]);
      // Read-only before the snapshot that marks the base complete, so a complete base is always read-only.
      if (layout === 'dataset') await run(['zfs', 'set', 'readonly=on', dataset]);
      await run(['zfs', 'snapshot', `${dataset}@${BASE_SNAPSHOT}`]);
      return (await describeBase(input))!;
    },

    async clone({ volume, base, sizeBytes }) {
      const origin = `${baseDataset(base)}@${BASE_SNAPSHOT}`;
      let current = await describe(volume);
      if (current && current.origin !== origin)
        throw new Error(`volume ${volume} exists with another origin: ${current.origin ?? 'none'}`);
      if (!current) {
        if (!(await datasetExists(origin)))
          throw new Error(`base ${base.image}:${base.version} is not imported into ${root}`);
        const cache = layout === 'zvol' ? ['-o', 'primarycache=metadata'] : [];
        await run([
          'zfs',
          'clone',
          '-p',
          '-o',
          `${VOLUME_PROPERTY}=${volume}`,
          ...cache,
          origin,
          volumeDataset(volume),
        ]);
        if (layout === 'zvol') await waitForDevice(await diskPath(volumeDataset(volume)));
        current = (await describe(volume))!;
      }
      return sizeBytes === undefined ? current : ensureSize(volume, current, sizeBytes);
    },

    async exists(volume) {
      return datasetExists(volumeDataset(volume));
    },

    async destroy(volume) {
      await destroyDataset(['zfs', 'destroy', '-r', volumeDataset(volume)]);
    },

    /** To `<root>/aside/<aside>`: outside the volumes' parent, so never listed; the base it is a clone of stays with it. */
    async setAside(volume, aside) {
      if (!ASIDE_NAME.test(aside) || aside.includes('..'))
        throw new InputError('aside', 'a name for a volume set aside', aside);
      const from = volumeDataset(volume);
      const to = `${root}/aside/${aside}`;
      if (!(await datasetExists(from))) return (await datasetExists(to)) ? to : undefined;
      await run(['zfs', 'rename', '-p', from, to]);
      return to;
    },

    async list() {
      if (!(await datasetExists(volumesParent))) return [];
      const { stdout } = await run([
        'zfs',
        'list',
        '-H',
        '-r',
        '-d',
        '1',
        '-t',
        'filesystem,volume',
        '-o',
        `name,${VOLUME_PROPERTY}`,
        volumesParent,
      ]);
      return stdout
        .split('\n')
        .map((line) => line.split('\t'))
        .filter(([name, volume]) => volume && volume !== '-' && name === `${volumesParent}/${volume}`)
        .map(([, volume]) => volume!)
        .sort();
    },

    async snapshot(volume, name = snapshotName()) {
      checkSnapshotName('snapshot', name);
      const dataset = await requireVolume(volume);
      if (!(await datasetExists(`${dataset}@${name}`))) await run(['zfs', 'snapshot', `${dataset}@${name}`]);
      return name;
    },

    async listSnapshots(volume) {
      return ownSnapshots(await snapshotsOf(await requireVolume(volume)));
    },

    async pruneSnapshots(volume, keep = DEFAULT_KEEP) {
      const dataset = await requireVolume(volume);
      const doomed = snapshotsToPrune(await snapshotsOf(dataset), keep);
      for (const name of doomed) await destroyDataset(['zfs', 'destroy', `${dataset}@${name}`]);
      return doomed;
    },

    sendArgv(volume, { from, to }) {
      const dataset = volumeDataset(volume);
      checkSnapshotName('to', to);
      const incremental = from === undefined ? [] : ['-i', `${dataset}@${checkSnapshotName('from', from)}`];
      return ['zfs', 'send', ...incremental, `${dataset}@${to}`];
    },

    /**
     * `-F` rolls this copy back to the common snapshot first: the copy being received into is not
     * in use (the volume runs on the other side), so anything written here since is stray.
     */
    async receive(volume, producer, options = {}) {
      if (!pipe) throw new Error('this zfs store was made without a pipe and cannot receive');
      await this.receiveFrom(volume, (consumer) =>
        pipe(producer, consumer, options.bytesPerSecond ? { bytesPerSecond: options.bytesPerSecond } : {}),
      );
    },

    async receiveFrom(volume, feed) {
      const dataset = volumeDataset(volume);
      await run(['zfs', 'create', '-p', volumesParent]);
      await feed(['zfs', 'recv', '-F', dataset]);
      // A plain stream carries no properties: the tag that makes it imgflow's is set here.
      await run(['zfs', 'set', `${VOLUME_PROPERTY}=${volume}`, dataset]);
    },
  };
}
