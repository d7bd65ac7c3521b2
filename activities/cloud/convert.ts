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
  /** The format the list declares (hv:format), to compare with what the file is. */
  declared?: string;
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
  /** The list declared another format than the file has (reported, not refused: the file decides). */
  formatNote?: string;
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

/** Unpacks the disk of an OVA into `dir`; an OVA without one, or with several (which one is the image?), is refused. */
async function diskFromOva(
  run: Run,
  ova: string,
  dir: string,
  timeoutMs: number,
): Promise<{ file: string; member: string }> {
  const { stdout } = await run(['tar', '-tf', ova], { timeoutMs });
  const members = stdout.split('\n').filter(Boolean);
  const disks = members.filter((name) => DISK_EXTENSIONS.test(name) && !name.endsWith('/'));
  if (disks.length > 1)
    throw new ConvertError(
      'ova-disk',
      `the OVA holds ${disks.length} disks (${disks.join(', ')}); an image is one disk, so none is taken`,
    );
  const member = disks[0];
  if (!member) throw new ConvertError('ova-disk', `the OVA holds no disk (members: ${members.join(', ') || 'none'})`);
  if (!safeMember(member))
    throw new ConvertError('ova-member', `the OVA's disk has an unsafe name: ${JSON.stringify(member)}`);
  await fs.mkdir(dir, { recursive: true });
  await run(['tar', '-xf', ova, '-C', dir, '--no-same-owner', '--no-same-permissions', '--', member], { timeoutMs });
  const file = path.join(dir, member);
  // A symlink member would point qemu-img at a file of this host's choosing.
  const stat = await fs.lstat(file);
  if (!stat.isFile()) throw new ConvertError('ova-member', `the OVA's disk ${member} is not a regular file`);
  return { file, member };
}

async function alreadyConverted(
  run: Run,
  request: ConvertRequest,
  timeoutMs: number,
): Promise<ConvertResult | undefined> {
  const stat = await fs.stat(request.target).catch(() => undefined);
  if (!stat) return undefined;
  const info = await qemuInfo(run, request.target, timeoutMs);
  if (info.format !== request.format) return undefined;
  return {
    path: request.target,
    format: request.format,
    sourceFormat: 'unknown',
    virtualBytes: info['virtual-size'],
    bytes: stat.size,
    alreadyDone: true,
  };
}

/** What the list's hv:format says against what the file is: a note when they disagree. */
function formatMismatch(declared: string | undefined, detected: string): string | undefined {
  const said = declared?.trim().toLowerCase();
  if (!said || said === detected || (said === 'img' && detected === 'raw')) return undefined;
  return `the list declares ${declared}, the file is ${detected === 'ova' ? 'an OVA' : detected}`;
}

/** Converts `source` to `format` at `target`. Idempotent: a finished target is reused. */
export async function convertImage(run: Run, request: ConvertRequest): Promise<ConvertResult> {
  const timeoutMs = request.timeoutMs ?? 3_600_000;
  const tar = await isTar(request.source);
  const sourceInfo = tar ? undefined : await qemuInfo(run, request.source, timeoutMs);
  // An OVA is a tar: a file declared one that is not is refused, never registered as a raw disk.
  if (request.declared?.trim().toLowerCase() === 'ova' && !tar)
    throw new ConvertError(
      'format',
      `the list declares OVA, the file is not an archive (it reads as ${sourceInfo!.format})`,
    );
  const formatNote = formatMismatch(request.declared, tar ? 'ova' : sourceInfo!.format);
  const done = await alreadyConverted(run, request, timeoutMs);
  if (done) return { ...done, ...(formatNote ? { formatNote } : {}) };

  const unpackDir = path.join(request.workDir, `ova-${path.basename(request.target)}`);
  try {
    let disk = request.source;
    let ovaMember: string | undefined;
    if (tar) {
      await fs.rm(unpackDir, { recursive: true, force: true });
      ({ file: disk, member: ovaMember } = await diskFromOva(run, request.source, unpackDir, timeoutMs));
    }
    const info = sourceInfo ?? (await qemuInfo(run, disk, timeoutMs));
    if (!ACCEPTED_FORMATS.has(info.format))
      throw new ConvertError('format', `unsupported image format ${JSON.stringify(info.format)}`);
    if (info['backing-filename'])
      throw new ConvertError(
        'backing-file',
        `the image has a backing file (${info['backing-filename']}); only self-contained images are accepted`,
      );

    await fs.mkdir(path.dirname(request.target), { recursive: true });
    const partial = partialPath(request.target);
    await run(['qemu-img', 'convert', '-p', '-f', info.format, '-O', request.format, disk, partial], {
      timeoutMs,
      progress: progress.qemuImg,
    });
    await fs.rename(partial, request.target);
    const stat = await fs.stat(request.target);
    return {
      path: request.target,
      format: request.format,
      sourceFormat: info.format,
      ovaMember,
      virtualBytes: info['virtual-size'],
      bytes: stat.size,
      alreadyDone: false,
      ...(formatNote ? { formatNote } : {}),
    };
  } finally {
    await fs.rm(unpackDir, { recursive: true, force: true });
  }
}
