/**
 * Turns a downloaded image into the registry's disk format. The format is read from the file
 * itself (qemu-img info), never trusted from the list; an OVA (a tar) is unpacked and its disk
 * taken. Images with a backing file are refused: a downloaded qcow2 must not be able to make us
 * read another file on this host.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { partialPath } from '../../lib/files.js';
import { progress, type Run } from '../runner.js';
import type { DiskFormat } from './registry/types.js';

/** An image refused by one named check, as `convert <check>: why`; retrying the same bytes cannot help. */
export class ConvertError extends Error {
  override readonly name = 'ConvertError';
  constructor(
    readonly check: 'ova-disk' | 'ova-member' | 'format' | 'backing-file',
    detail: string,
  ) {
    super(`convert ${check}: ${detail}`);
  }
}

export interface ConvertRequest {
  source: string;
  /** Where the converted disk goes; left as it is when it already holds the right format. */
  target: string;
  format: DiskFormat;
  /** Scratch space for unpacking OVAs. */
  workDir: string;
  timeoutMs?: number;
}

export interface ConvertResult {
  path: string;
  format: DiskFormat;
  /** What the downloaded file (or the OVA's disk) was. */
  sourceFormat: string;
  /** The disk taken out of an OVA. */
  ovaMember?: string;
  virtualBytes: number;
  bytes: number;
  /** The target was already there, converted by an earlier attempt. */
  alreadyDone: boolean;
}

/** Formats qemu-img may read from a download; anything else (luks, dmg, nbd...) is refused. */
const ACCEPTED_FORMATS = new Set(['raw', 'qcow2', 'qcow', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qed']);
const DISK_EXTENSIONS = /\.(vmdk|qcow2|qcow|img|raw|vhd|vhdx|vdi)$/i;

interface QemuInfo {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
}

async function qemuInfo(run: Run, file: string, timeoutMs: number): Promise<QemuInfo> {
  const { stdout } = await run(['qemu-img', 'info', '--output=json', file], { timeoutMs });
  return JSON.parse(stdout) as QemuInfo;
}

/** A POSIX tar has "ustar" at offset 257 of its first header. */
export async function isTar(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const header = Buffer.alloc(262);
    const { bytesRead } = await handle.read(header, 0, 262, 0);
    return bytesRead === 262 && header.subarray(257, 262).toString('latin1') === 'ustar';
  } finally {
    await handle.close();
  }
}

/** Member names that stay inside the unpack directory. */
function safeMember(name: string): boolean {
  return name.length > 0 && !name.startsWith('/') && !name.split('/').includes('..') && !/[\0-\x1f]/.test(name);
}

/** Unpacks the first disk of an OVA into `dir`; an OVA without one is refused. */
async function diskFromOva(run: Run, ova: string, dir: string, timeoutMs: number): Promise<{ file: string; member: string }> {
  const { stdout } = await run(['tar', '-tf', ova], { timeoutMs });
  const members = stdout.split('\n').filter(Boolean);
  const member = members.find((name) => DISK_EXTENSIONS.test(name) && !name.endsWith('/'));
  if (!member) throw new ConvertError('ova-disk', `the OVA holds no disk (members: ${members.join(', ') || 'none'})`);
  if (!safeMember(member)) throw new ConvertError('ova-member', `the OVA's disk has an unsafe name: ${JSON.stringify(member)}`);
  await fs.mkdir(dir, { recursive: true });
  await run(['tar', '-xf', ova, '-C', dir, '--no-same-owner', '--no-same-permissions', '--', member], { timeoutMs });
  const file = path.join(dir, member);
  // A symlink member would point qemu-img at a file of this host's choosing.
  const stat = await fs.lstat(file);
  if (!stat.isFile()) throw new ConvertError('ova-member', `the OVA's disk ${member} is not a regular file`);
  return { file, member };
}

async function alreadyConverted(run: Run, request: ConvertRequest, timeoutMs: number): Promise<ConvertResult | undefined> {
  const stat = await fs.stat(request.target).catch(() => undefined);
  if (!stat) return undefined;
  const info = await qemuInfo(run, request.target, timeoutMs);
  if (info.format !== request.format) return undefined;
  return { path: request.target, format: request.format, sourceFormat: 'unknown', virtualBytes: info['virtual-size'], bytes: stat.size, alreadyDone: true };
}

/** Converts `source` to `format` at `target`. Idempotent: a finished target is reused. */
export async function convertImage(run: Run, request: ConvertRequest): Promise<ConvertResult> {
  const timeoutMs = request.timeoutMs ?? 3_600_000;
  const done = await alreadyConverted(run, request, timeoutMs);
  if (done) return done;

  const unpackDir = path.join(request.workDir, `ova-${path.basename(request.target)}`);
  try {
    let disk = request.source;
    let ovaMember: string | undefined;
    if (await isTar(request.source)) {
      await fs.rm(unpackDir, { recursive: true, force: true });
      ({ file: disk, member: ovaMember } = await diskFromOva(run, request.source, unpackDir, timeoutMs));
    }
    const info = await qemuInfo(run, disk, timeoutMs);
    if (!ACCEPTED_FORMATS.has(info.format)) throw new ConvertError('format', `unsupported image format ${JSON.stringify(info.format)}`);
    if (info['backing-filename']) throw new ConvertError('backing-file', `the image has a backing file (${info['backing-filename']}); only self-contained images are accepted`);

    await fs.mkdir(path.dirname(request.target), { recursive: true });
    const partial = partialPath(request.target);
    await run(['qemu-img', 'convert', '-p', '-f', info.format, '-O', request.format, disk, partial], { timeoutMs, progress: progress.qemuImg });
    await fs.rename(partial, request.target);
    const stat = await fs.stat(request.target);
    return { path: request.target, format: request.format, sourceFormat: info.format, ovaMember, virtualBytes: info['virtual-size'], bytes: stat.size, alreadyDone: false };
  } finally {
    await fs.rm(unpackDir, { recursive: true, force: true });
  }
}
