/**
 * The pack phase: the image's files from the tree, ext4 (raw), qcow2 converted from it, and/or
 * squashfs, each written beside its final name and renamed when whole.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkName } from '../../../common/names.js';
import { partialPath, sha256File } from '../../../lib/files.js';
import { progress, type Run } from '../../runner.js';
import type { ActivityDeps } from '../../shared/index.js';
import { measureRoot } from '../measure.js';
import { buildDirs, loggingRunner, MINUTE, runPhase, takeRoot, type BuildRef, type PhaseResult } from '../phase.js';
import { assertNothingMounted } from '../prepare.js';
import { checkOutputsInput, type OutputFormat } from '../recipe.js';

export interface PackedOutput {
  format: OutputFormat;
  path: string;
  sha256: string;
  bytes: number;
}

async function describe(format: OutputFormat, file: string): Promise<PackedOutput> {
  return { format, path: file, sha256: await sha256File(file), bytes: (await fs.stat(file)).size };
}

const MIB = 1024 * 1024;

/** Room for the tree plus ext4's own metadata and some headroom, in whole 4 MiB steps. */
export function ext4Size(treeBytes: number): number {
  return Math.ceil((treeBytes * 1.25 + 128 * MIB) / (4 * MIB)) * 4 * MIB;
}

async function packExt4(run: Run, root: string, target: string, label: string): Promise<string> {
  const partial = partialPath(target);
  await fs.rm(partial, { force: true });
  const { bytes } = await measureRoot(run, root);
  const file = await fs.open(partial, 'w');
  await file.truncate(ext4Size(bytes));
  await file.close();
  await run(['mkfs.ext4', '-q', '-F', '-i', '8192', '-L', label.slice(0, 16), '-d', root, partial], {
    timeoutMs: 30 * MINUTE,
  });
  await fs.rename(partial, target);
  return target;
}

async function packQcow2(run: Run, raw: string, target: string): Promise<PackedOutput> {
  const partial = partialPath(target);
  await run(['qemu-img', 'convert', '-p', '-f', 'raw', '-O', 'qcow2', raw, partial], {
    timeoutMs: 30 * MINUTE,
    progress: progress.qemuImg,
  });
  await fs.rename(partial, target);
  return describe('qcow2', target);
}

async function packSquashfs(run: Run, root: string, target: string): Promise<PackedOutput> {
  const partial = partialPath(target);
  await run(['mksquashfs', root, partial, '-noappend', '-no-progress', '-quiet'], { timeoutMs: 30 * MINUTE });
  await fs.rename(partial, target);
  return describe('squashfs', target);
}

export function createPackActivities({ run: runCommand, config }: ActivityDeps) {
  const run = loggingRunner(runCommand);
  return {
    /** The image's files: ext4 (raw), qcow2 converted from it, and/or squashfs. */
    async packOutputs(
      input: BuildRef & { image: string; version: string; outputs: OutputFormat[] },
    ): Promise<PhaseResult & { outputs: PackedOutput[] }> {
      const dirs = buildDirs(config, input);
      const image = checkName('image', input.image);
      const version = checkName('version', input.version);
      const formats = checkOutputsInput(input.outputs);
      return runPhase(run, dirs, 'pack', { image, version, formats, arch: input.arch }, async () => {
        await takeRoot(run, dirs);
        await assertNothingMounted(dirs.root);
        await fs.mkdir(dirs.outputs, { recursive: true });
        const base = path.join(dirs.outputs, `${image}-${version}`);
        const outputs: PackedOutput[] = [];
        if (formats.includes('raw') || formats.includes('qcow2')) {
          const raw = await packExt4(run, dirs.root, `${base}.raw`, image);
          if (formats.includes('qcow2')) outputs.push(await packQcow2(run, raw, `${base}.qcow2`));
          if (formats.includes('raw')) outputs.push(await describe('raw', raw));
          else await fs.rm(raw, { force: true });
        }
        if (formats.includes('squashfs')) outputs.push(await packSquashfs(run, dirs.root, `${base}.squashfs`));
        return { outputs };
      });
    },
  };
}
