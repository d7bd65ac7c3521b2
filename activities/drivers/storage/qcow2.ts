/**
 * Volumes as qcow2 files with their base as backing file: the default store, needing neither root
 * nor kernel features. Snapshots are qcow2 internal snapshots; there is no replication.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkName, InputError } from '../../../common/names.js';
import { exists, partialPath, removeStalePartials } from '../../../lib/files.js';
import { homeModes, privateDir, type FileModes } from '../../../lib/modes.js';
import type { Run } from '../../runner.js';
import { checkSnapshotName, snapshotName } from '../naming.js';
import { ASIDE_NAME, type BaseInfo, type BaseRef, type StorageDriver, type VolumeInfo } from '../types.js';
import { DEFAULT_KEEP, ownSnapshots, snapshotsToPrune } from './snapshots.js';

export interface Qcow2StorageConfig {
  run: Run;
  /** Directory holding `bases/<image>/<version>.qcow2` and `volumes/<volume>.qcow2`. */
  root: string;
  /** Who may read bases and volumes (default: their owner only, unless IMGFLOW_HOME_MODE widens it). */
  modes?: FileModes;
}

interface QemuImgInfo {
  virtualBytes: number;
  format: string;
  backingFile?: string;
  snapshots: string[];
}

export function createQcow2Storage({ run, root, modes = homeModes() }: Qcow2StorageConfig): StorageDriver {
  const basePath = (base: BaseRef) =>
    path.join(root, 'bases', checkName('image', base.image), `${checkName('version', base.version)}.qcow2`);
  const volumesDir = path.join(root, 'volumes');
  const volumePath = (volume: string) => path.join(volumesDir, `${checkName('volume', volume)}.qcow2`);

  /** `-U`: reading metadata must work while an exporter holds the image open. */
  async function info(file: string): Promise<QemuImgInfo> {
    const raw = JSON.parse((await run(['qemu-img', 'info', '-U', '--output=json', file])).stdout) as Record<
      string,
      unknown
    >;
    const snapshots = Array.isArray(raw.snapshots)
      ? (raw.snapshots as { name?: unknown }[]).map((s) => String(s.name))
      : [];
    return {
      virtualBytes: Number(raw['virtual-size']),
      format: String(raw.format),
      ...(raw['backing-filename'] ? { backingFile: String(raw['backing-filename']) } : {}),
      snapshots,
    };
  }

  async function describeBase(base: BaseRef): Promise<BaseInfo | undefined> {
    const file = basePath(base);
    if (!(await exists(file))) return undefined;
    return {
      image: base.image,
      version: base.version,
      devicePath: file,
      origin: file,
      sizeBytes: (await info(file)).virtualBytes,
    };
  }

  async function describe(volume: string): Promise<VolumeInfo | undefined> {
    const file = volumePath(volume);
    if (!(await exists(file))) return undefined;
    const current = await info(file);
    return {
      volume,
      devicePath: file,
      format: 'qcow2',
      sizeBytes: current.virtualBytes,
      ...(current.backingFile ? { origin: current.backingFile } : {}),
    };
  }

  async function requireVolume(volume: string): Promise<string> {
    const file = volumePath(volume);
    if (!(await exists(file))) throw new Error(`volume ${volume} does not exist in ${root}`);
    return file;
  }

  async function listSnapshots(volume: string): Promise<string[]> {
    return ownSnapshots((await info(await requireVolume(volume))).snapshots);
  }

  return {
    kind: 'qcow2',
    describeBase,
    describe,

    /** Converted beside its final name and renamed, so a half-written base is never cloned from. */
    async importBase(input) {
      const current = await describeBase(input);
      if (current) return current;
      const target = basePath(input);
      await privateDir(path.dirname(target), modes);
      await removeStalePartials(target);
      const partial = partialPath(target);
      await run(['qemu-img', 'convert', '-O', 'qcow2', '--', input.source, partial]);
      await fs.chmod(partial, modes.readOnly);
      await fs.rename(partial, target);
      return (await describeBase(input))!;
    },

    async clone({ volume, base, sizeBytes }) {
      const origin = basePath(base);
      const current = await describe(volume);
      if (current) {
        if (current.origin !== origin)
          throw new Error(`volume ${volume} exists with another base: ${current.origin ?? 'none'}`);
        return current;
      }
      if (!(await exists(origin))) throw new Error(`base ${base.image}:${base.version} is not in ${root}`);
      await privateDir(volumesDir, modes);
      const partial = partialPath(volumePath(volume));
      const size = sizeBytes === undefined ? [] : [String(sizeBytes)];
      await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', origin, '-F', 'qcow2', partial, ...size]);
      await fs.chmod(partial, modes.file);
      await fs.rename(partial, volumePath(volume));
      return (await describe(volume))!;
    },

    async exists(volume) {
      return exists(volumePath(volume));
    },

    async destroy(volume) {
      await fs.rm(volumePath(volume), { force: true });
      await fs.rm(partialPath(volumePath(volume)), { force: true });
    },

    async setAside(volume, aside) {
      if (!ASIDE_NAME.test(aside) || aside.includes('..'))
        throw new InputError('aside', 'a name for a volume set aside', aside);
      const from = volumePath(volume);
      const to = path.join(volumesDir, 'aside', `${aside}.qcow2`);
      if (!(await exists(from))) return (await exists(to)) ? to : undefined;
      await privateDir(path.dirname(to), modes);
      await fs.rename(from, to);
      return to;
    },

    async list() {
      const names = await fs.readdir(volumesDir).catch(() => [] as string[]);
      return names
        .filter((n) => n.endsWith('.qcow2'))
        .map((n) => n.slice(0, -'.qcow2'.length))
        .filter((n) => {
          try {
            return checkName('volume', n) === n;
          } catch {
            return false;
          }
        })
        .sort();
    },

    async snapshot(volume, name = snapshotName()) {
      checkSnapshotName('snapshot', name);
      const file = await requireVolume(volume);
      if (!(await info(file)).snapshots.includes(name)) await run(['qemu-img', 'snapshot', '-c', name, file]);
      return name;
    },

    listSnapshots,

    async pruneSnapshots(volume, keep = DEFAULT_KEEP) {
      const file = await requireVolume(volume);
      const doomed = snapshotsToPrune((await info(file)).snapshots, keep);
      for (const name of doomed) await run(['qemu-img', 'snapshot', '-d', name, file]);
      return doomed;
    },
  };
}
