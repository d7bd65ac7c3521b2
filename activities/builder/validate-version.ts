/**
 * A stored version brought back onto a builder so `imgflow validate` can check it and `--fix`
 * can repair it: the artifact is copied from the image store and checked by sha256, its ext4 read
 * through a read-only loop mount (squashfs: unsquashfs) into a build root, where the usual
 * phases (validate, measure, packOutputs) take over. The stored version itself is never written.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkHost, InputError } from '../../common/names.js';
import type { Config } from '../../lib/config.js';
import { exists, sha256File } from '../../lib/files.js';
import type { Run } from '../runner.js';
import { measureRoot } from './measure.js';
import { assertNothingMounted } from './prepare.js';
import { checkPrepareInput, type OutputFormat, type PrepareOptions } from './recipe.js';
import { releaseMounts, replaceRoot } from './rootfs.js';
import { fixRoot, type Breach } from './validate.js';
import { buildDirs, MINUTE, runPhaseOnce, type BuildDirs, type BuildRef, type PhaseResult } from './phase.js';

export interface StoredArtifact {
  format: OutputFormat;
  host: string;
  path: string;
  sha256: string;
}

const SAFE_PATH = /^\/[A-Za-z0-9._+@\/-]*$/;
const SHA256 = /^[0-9a-f]{64}$/;
const FORMATS: readonly OutputFormat[] = ['qcow2', 'raw', 'squashfs'];

function checkArtifact(artifact: StoredArtifact): StoredArtifact {
  if (!FORMATS.includes(artifact?.format))
    throw new InputError('artifact.format', FORMATS.join(', '), artifact?.format);
  checkHost('artifact.host', artifact.host);
  if (!SAFE_PATH.test(artifact.path) || artifact.path.split('/').includes('..'))
    throw new InputError('artifact.path', 'an absolute path of letters, digits and ._+@-/', artifact.path);
  if (!SHA256.test(artifact.sha256))
    throw new InputError('artifact.sha256', '64 lower-case hex digits', artifact.sha256);
  return artifact;
}

export function createValidateVersionActivities({ run, config }: { run: Run; config: Config }) {
  /** The artifact as a local file checked against its digest: the store's own copy when it is on this host. */
  async function localCopy(dirs: BuildDirs, artifact: StoredArtifact): Promise<string> {
    let file = artifact.path;
    if (artifact.host !== config.host) {
      file = path.join(dirs.work, `stored.${artifact.format}`);
      await run(['rsync', '--sparse', '--times', '--', `${artifact.host}:${artifact.path}`, file], {
        timeoutMs: 60 * MINUTE,
      });
    }
    const actual = await sha256File(file);
    if (actual !== artifact.sha256)
      throw new Error(
        `stored artifact ${artifact.path} on ${artifact.host} has sha256 ${actual}, its version records ${artifact.sha256}`,
      );
    return file;
  }

  /** Copies the tree of an ext4 image into `target` through a read-only loop mount, always unmounted after. */
  async function copyExt4(dirs: BuildDirs, raw: string, target: string): Promise<void> {
    const mnt = path.join(dirs.work, 'mnt');
    await fs.mkdir(mnt, { recursive: true });
    await run(['mount', '-t', 'ext4', '-o', 'ro,loop,noload,nodev,nosuid,noexec', raw, mnt]);
    try {
      await run(['rsync', '-aHAX', '--numeric-ids', '--', `${mnt}/`, `${target}/`], { timeoutMs: 60 * MINUTE });
    } finally {
      await run(['umount', mnt]);
    }
  }

  async function unpackInto(dirs: BuildDirs, artifact: StoredArtifact, file: string, target: string): Promise<void> {
    if (artifact.format === 'squashfs') {
      await run(['unsquashfs', '-f', '-no-progress', '-quiet', '-d', target, file], { timeoutMs: 60 * MINUTE });
      return;
    }
    let raw = file;
    if (artifact.format === 'qcow2') {
      raw = path.join(dirs.work, 'stored.raw');
      await run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', file, raw], { timeoutMs: 60 * MINUTE });
    }
    try {
      await copyExt4(dirs, raw, target);
    } finally {
      if (raw !== artifact.path) await fs.rm(raw, { force: true });
    }
  }

  return {
    /** The stored version's tree as this build's root, measured like a source phase. */
    async openVersion(input: BuildRef & { artifact: StoredArtifact }): Promise<PhaseResult & { format: OutputFormat }> {
      const dirs = buildDirs(config, input);
      const artifact = checkArtifact(input.artifact);
      return runPhaseOnce(
        dirs,
        'open',
        { artifact, arch: input.arch },
        async () => {
          const started = performance.now();
          // A worker that died here may have left the image mounted.
          await releaseMounts(run, dirs.work);
          await fs.mkdir(dirs.work, { recursive: true });
          await replaceRoot(run, dirs.root, async (partial) =>
            unpackInto(dirs, artifact, await localCopy(dirs, artifact), partial),
          );
          await fs.rm(path.join(dirs.work, `stored.${artifact.format}`), { force: true });
          const durationMs = Math.round(performance.now() - started);
          return { phase: 'open', durationMs, format: artifact.format, ...(await measureRoot(run, dirs.root)) };
        },
        { replacesRoot: true },
      );
    },

    /** Prepares the opened tree again; a report row with what was repaired and what is left. */
    async fixVersion(
      input: BuildRef & { prepare: PrepareOptions },
    ): Promise<PhaseResult & { fixed: Breach[]; remaining: Breach[] }> {
      const dirs = buildDirs(config, input);
      const prepare = checkPrepareInput(input.prepare);
      return runPhaseOnce(dirs, 'fix', { prepare, arch: input.arch }, async () => {
        if (!(await exists(path.join(dirs.root, 'etc'))))
          throw new Error(`build ${dirs.work} has no opened version to fix`);
        await releaseMounts(run, dirs.root);
        await assertNothingMounted(dirs.root);
        const started = performance.now();
        const { before, after } = await fixRoot(dirs.root, prepare);
        const durationMs = Math.round(performance.now() - started);
        const left = new Set(after.map((b) => `${b.rule}\0${b.path}`));
        const fixed = before.filter((b) => !left.has(`${b.rule}\0${b.path}`));
        return {
          phase: 'fix',
          durationMs,
          fixed,
          remaining: after,
          note: `${fixed.length} breaches repaired`,
          ...(await measureRoot(run, dirs.root)),
        };
      });
    },
  };
}
