/**
 * NAS activities, on queue `nas.<host>`: the image store's copies of versions and the volumes
 * cloned from them.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { checkInt, checkName } from '../../common/names.js';
import { privateDir } from '../../lib/modes.js';
import { nasSettings, paths, type NasSettings } from '../../lib/config.js';
import { exists, partialPath, removeStalePartials, sha256File } from '../../lib/files.js';
import { createLogger } from '../../lib/logger.js';
import { checkStreamAddress, checkToken, createStreamReceiver, type Endpoint } from '../drivers/stream.js';
import { progress } from '../runner.js';
import type { ActivityDeps } from '../shared/index.js';

export interface NasDeps extends ActivityDeps {
  /** The NAS's settings from its worker's configuration; the embedded defaults when absent. */
  settings?: NasSettings;
}

export interface StoreRequest {
  image: string;
  version: string;
  name: string;
  sha256: string;
}

export interface ImageInfo {
  path: string;
  format: string;
  virtualBytes: number;
  actualBytes: number;
  backingFile?: string;
}

export function createNasActivities({ run, config, settings = nasSettings({}) }: NasDeps) {
  const root = paths(config).nas(config.host);
  const { modes } = settings;
  // Where builders on other hosts stream files to this NAS (unset: they are fetched over rsync).
  const streamAddress = checkStreamAddress(settings.streamAddress);
  const receiver = createStreamReceiver(createLogger('imgflow-nas'));
  const storePath = (image: string, version: string, name: string) =>
    path.join(root, 'store', checkName('image', image), checkName('version', version), checkName('file name', name));
  const volumePath = (volume: string) => path.join(root, 'volumes', `${checkName('volume', volume)}.qcow2`);

  async function info(file: string): Promise<ImageInfo> {
    const raw = JSON.parse((await run(['qemu-img', 'info', '--output=json', file])).stdout) as Record<string, unknown>;
    return {
      path: file,
      format: String(raw.format),
      virtualBytes: Number(raw['virtual-size']),
      actualBytes: Number(raw['actual-size']),
      ...(raw['backing-filename'] ? { backingFile: String(raw['backing-filename']) } : {}),
    };
  }

  /** Whether the store holds the file already; a stored file that differs is never replaced. */
  async function storedAlready(input: StoreRequest, target: string): Promise<boolean> {
    if (!(await exists(target))) return false;
    if ((await sha256File(target)) === input.sha256) return true;
    throw new Error(`${input.image}:${input.version} ${input.name} on ${config.host} differs from its recorded sha256`);
  }

  async function freshPartial(target: string): Promise<string> {
    await privateDir(path.dirname(target), modes);
    await removeStalePartials(target);
    return partialPath(target);
  }

  /** The partial takes its final name, read-only, only once its digest is the recorded one. */
  async function settle(input: StoreRequest, partial: string, target: string): Promise<void> {
    const got = await sha256File(partial);
    if (got !== input.sha256) {
      await fs.rm(partial, { force: true });
      throw new Error(
        `sha256 of ${input.image}:${input.version} ${input.name} after transfer is ${got}, expected ${input.sha256}`,
      );
    }
    await fs.chmod(partial, modes.readOnly);
    await fs.rename(partial, target);
  }

  return {
    /**
     * Brings one file of a built version (an artifact or a manifest) into this NAS's image store
     * over rsync and checks its digest before it takes its final name, read-only: a half-copied
     * base is never cloned from, and a stored version never changes.
     */
    async storeFile(
      input: StoreRequest & { source: { host: string; path: string } },
    ): Promise<{ host: string; path: string }> {
      const target = storePath(input.image, input.version, input.name);
      if (await storedAlready(input, target)) return { host: config.host, path: target };
      const partial = await freshPartial(target);
      const from = input.source.host === config.host ? input.source.path : `${input.source.host}:${input.source.path}`;
      await run(['rsync', '--sparse', '--times', '--info=progress2', '--', from, partial], {
        progress: progress.rsync,
      });
      await settle(input, partial, target);
      return { host: config.host, path: target };
    },

    /**
     * Opens this NAS's port for a builder on another host to stream one file to: null when the
     * file is stored already, or when this NAS takes files over rsync only (no stream address).
     */
    async storeListen(input: StoreRequest & { token: string; waitSeconds: number }): Promise<Endpoint | null> {
      const target = storePath(input.image, input.version, input.name);
      if (!streamAddress || (await storedAlready(input, target))) return null;
      return receiver.listen({
        address: streamAddress,
        token: checkToken('token', input.token),
        timeoutMs: checkInt('waitSeconds', input.waitSeconds, 1, 3600) * 1000,
      });
    },

    /** Receives the builder's stream into a partial file, then checks and names it as storeFile does. */
    async storeReceive(input: StoreRequest & { token: string }): Promise<{ host: string; path: string }> {
      const target = storePath(input.image, input.version, input.name);
      const token = checkToken('token', input.token);
      // The listener lives in this worker only: after a restart the workflow starts a new transfer.
      if (!receiver.has(token))
        throw ApplicationFailure.nonRetryable(
          'no listener for this transfer on this host (the worker restarted?)',
          'TransferLost',
        );
      const partial = await freshPartial(target);
      await receiver.receive({ token, consumer: ['dd', `of=${partial}`, 'bs=1M', 'conv=sparse', 'status=none'] });
      await settle(input, partial, target);
      return { host: config.host, path: target };
    },

    /** A copy-on-write clone of a base; an existing clone of the same base is kept as it is. */
    async cloneVolume(input: { volume: string; base: string }): Promise<ImageInfo> {
      const target = volumePath(input.volume);
      if (await exists(target)) {
        const current = await info(target);
        if (current.backingFile !== input.base)
          throw new Error(`volume ${input.volume} exists with another base: ${current.backingFile ?? 'none'}`);
        return current;
      }
      await privateDir(path.dirname(target), modes);
      await removeStalePartials(target);
      const partial = partialPath(target);
      await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', input.base, '-F', 'qcow2', partial]);
      await fs.chmod(partial, modes.file);
      await fs.rename(partial, target);
      return info(target);
    },

    /** Reads the clone through its backing chain and checks the base's pattern shows through. */
    async checkVolume(input: { volume: string }): Promise<ImageInfo & { readsThrough: boolean }> {
      const target = volumePath(input.volume);
      const check = await run(['qemu-io', '-f', 'qcow2', '-r', '-c', 'read -P 0x5a 0 1M', target], {
        okExitCodes: [1],
      });
      return {
        ...(await info(target)),
        readsThrough: !/Pattern verification failed/.test(check.stdout + check.stderr) && check.exitCode === 0,
      };
    },
  };
}

export type NasActivities = ReturnType<typeof createNasActivities>;
