/**
 * Builder activities, on queue `builder.<arch>`: everything that makes an image's bytes. Each
 * build phase is a file of its own under phases/, on the plumbing beneath them all (phase.ts: the
 * build's directory, markers, log and report row; rootfs.ts: the tree; measure.ts: measurements).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkArch, checkInt, checkName, InputError } from '../../common/names.js';
import { paths, type BuilderSettings } from '../../lib/config.js';
import { exists, partialPath, removeStalePartials, sha256File } from '../../lib/files.js';
import { createLogger } from '../../lib/logger.js';
import { checkEndpoint, checkToken, sendStream, type Endpoint } from '../drivers/stream.js';
import type { ActivityDeps } from '../shared/index.js';
import { BUILD_LOG, buildDirs, type BuildRef } from './phase.js';
import { createBootstrapActivities } from './phases/bootstrap.js';
import { createCaptureActivities, type SshOptions } from './phases/capture.js';
import { createHookActivities } from './phases/hook.js';
import { createMeasureActivities } from './phases/measure.js';
import { createPackActivities } from './phases/pack.js';
import { createPackagesActivities } from './phases/packages.js';
import { createPrepareActivities } from './phases/prepare.js';
import { createTarballActivities } from './phases/tarball.js';
import { removeTree } from './rootfs.js';
import { createValidateVersionActivities } from './validate-version.js';

export interface BuilderDeps extends ActivityDeps {
  /** How captures reach remote hosts; ssh's own defaults when absent. */
  ssh?: SshOptions;
  /** The builder's settings from its worker's configuration; the embedded defaults when absent. */
  settings?: BuilderSettings;
}

export interface BaseImage {
  host: string;
  path: string;
  sha256: string;
  bytes: number;
  virtualBytes: number;
}

export function createBuilderActivities(deps: BuilderDeps) {
  const { run, config } = deps;
  const workdir = (arch: string) => paths(config).builder(arch);
  const logger = createLogger('imgflow-builder');

  return {
    // The image build phases: a source (bootstrap, capture or unpackTarball), then installPackages, runHook, prepare, validate, fix, measure, packOutputs.
    ...createBootstrapActivities(deps),
    ...createCaptureActivities(deps),
    ...createTarballActivities(deps),
    ...createPackagesActivities(deps),
    ...createHookActivities(deps),
    ...createPrepareActivities(deps),
    ...createMeasureActivities(deps),
    ...createPackActivities(deps),
    // A stored version opened as a build's tree, for validation and its fix.
    ...createValidateVersionActivities(deps),

    /** The build's log (every command its phases ran), for the version to keep. */
    async buildLog(input: BuildRef): Promise<{ path: string; sha256: string } | undefined> {
      const file = path.join(buildDirs(config, input).work, BUILD_LOG);
      return (await exists(file)) ? { path: file, sha256: await sha256File(file) } : undefined;
    },

    /** Removes a build's work directory (its outputs are stored by then, or the build failed). */
    async removeBuild(input: BuildRef): Promise<{ removed: boolean }> {
      const dirs = buildDirs(config, input);
      if (!(await exists(dirs.work))) return { removed: false };
      await removeTree(run, dirs.work);
      return { removed: true };
    },

    /**
     * A small qcow2 base image with a known pattern written into its first MiB, so a clone can be
     * checked to read through to it. Idempotent: an existing finished image is returned as it is.
     */
    async createBaseImage(input: {
      image: string;
      version: string;
      arch: string;
      sizeMiB: number;
    }): Promise<BaseImage> {
      checkName('image', input.image);
      checkName('version', input.version);
      checkInt('sizeMiB', input.sizeMiB, 1, 1024 * 1024);
      const target = path.join(workdir(input.arch), input.image, `${input.version}.qcow2`);
      if (!(await exists(target))) {
        await fs.mkdir(path.dirname(target), { recursive: true });
        await removeStalePartials(target);
        const partial = partialPath(target);
        await run(['qemu-img', 'create', '-q', '-f', 'qcow2', partial, `${input.sizeMiB}M`]);
        await run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', partial]);
        await fs.rename(partial, target);
      }
      const info = JSON.parse((await run(['qemu-img', 'info', '--output=json', target])).stdout) as {
        'virtual-size': number;
      };
      const stat = await fs.stat(target);
      return {
        host: config.host,
        path: target,
        sha256: await sha256File(target),
        bytes: stat.size,
        virtualBytes: info['virtual-size'],
      };
    },

    /**
     * Streams one of this builder's files to a NAS on another host that listens for it (the NAS's
     * storeListen). Only files under the builder's own directory go: a workflow cannot make a
     * builder send anything else off the host.
     */
    async sendFile(input: Endpoint & { arch: string; path: string; token: string }): Promise<{ bytes: number }> {
      const root = workdir(checkArch('arch', input.arch));
      const file = path.resolve(input.path);
      if (!file.startsWith(`${root}${path.sep}`)) throw new InputError('path', `a file under ${root}`, input.path);
      return sendStream(logger, {
        ...checkEndpoint(input),
        token: checkToken('token', input.token),
        producer: ['cat', '--', file],
      });
    },
  };
}

export type BuilderActivities = ReturnType<typeof createBuilderActivities>;
