/**
 * Packing on queue `nas.<host>`: publishes a stored version under a name, as a netboot boot
 * directory `<home>/nas/<host>/boot/<NAME>` (the squashfs root image with the image's kernel and
 * initrd) or as a read-only VM base `<home>/nas/<host>/vm/<NAME>/base.<format>`. NAME is a symlink
 * switched atomically (rename over it) to a fresh directory; the directory it pointed to is kept
 * aside as `<NAME>.moved.aside.on.<timestamp>`, never deleted. A NAME is one image's: the
 * `version.json` of what it points at says whose, and another image's pack under it is refused
 * (lineages keep their names apart, not the NAS's). An image whose /etc/shadow holds password
 * hashes is refused unless its recipe allowed them.
 */
import { privateDir, type FileModes } from '../../lib/modes.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { Artifact, PackKind } from '../../common/lineage.js';
import { checkName, InputError } from '../../common/names.js';
import { nasSettings, paths } from '../../lib/config.js';
import { exists, partialPath, sha256File } from '../../lib/files.js';
import { usersWithPasswords } from '../shared/index.js';
import type { NasDeps } from './index.js';

export interface PackInput {
  image: string;
  version: string;
  tag: string;
  name: string;
  /** The time of the request, `YYYY-mm-dd-HH-MM-SS`: names the new directory and the one moved aside. */
  stamp: string;
  artifacts: Artifact[];
  /** The version's recipe allowed password hashes. */
  allowPasswordHashes?: boolean;
}

/** What the published directory holds, also written to its `version.json`. */
export interface PackContents {
  /** Netboot: the kernel and initrd's paths in the image, when it has them. */
  kernel?: string;
  initrd?: string;
  /** VM: the base's format. */
  format?: 'qcow2' | 'raw';
}

export interface PackResult extends PackContents {
  host: string;
  path: string;
  root?: string;
  movedAside?: string;
  changed: boolean;
}

interface Entry {
  type: string;
  target?: string;
}

/** `unsquashfs -lls` lines: `<mode> <owner> <size> <date> <time> squashfs-root/<path>[ -> <target>]`. */
function parseListing(listing: string): Map<string, Entry> {
  const entries = new Map<string, Entry>();
  for (const line of listing.split('\n')) {
    const m = /^(\S)\S*\s+\S+\s+\S+\s+\S+\s+\S+\s+squashfs-root\/(.+?)(?: -> (.+))?$/.exec(line);
    if (m) entries.set(m[2]!, { type: m[1]!, ...(m[3] ? { target: m[3] } : {}) });
  }
  return entries;
}

/** Follows symlinks inside the image to a regular file's path; undefined when it leads nowhere. */
function resolveIn(entries: Map<string, Entry>, start: string): string | undefined {
  let at = start;
  for (let hops = 0; hops < 8; hops++) {
    const e = entries.get(at);
    if (!e) return undefined;
    if (e.type === '-') return at;
    if (e.type !== 'l' || !e.target) return undefined;
    at = path.posix.normalize(
      e.target.startsWith('/') ? e.target.slice(1) : path.posix.join(path.posix.dirname(at), e.target),
    );
    if (at.startsWith('..')) return undefined;
  }
  return undefined;
}

const byVersion = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });
/** Only plain names under boot/ reach unsquashfs's argv. */
const KERNEL = /^boot\/vmlinuz[A-Za-z0-9._+-]*$/;
const INITRD = /^boot\/initrd\.img[A-Za-z0-9._+-]*$/;

/**
 * The image's kernel and initrd from a listing of `vmlinuz initrd.img boot`: the usual /vmlinuz and
 * /initrd.img symlinks (or boot/vmlinuz), else the newest boot/vmlinuz-* and its matching initrd.
 */
export function bootFiles(listing: string): { kernel?: string; initrd?: string } {
  const entries = parseListing(listing);
  const files = [...entries.keys()].filter((p) => entries.get(p)!.type === '-');
  const newest = (prefix: string) =>
    files
      .filter((p) => p.startsWith(prefix))
      .sort(byVersion)
      .at(-1);
  const pick = (found: string | undefined, shape: RegExp) => (found && shape.test(found) ? found : undefined);
  const kernel = pick(
    resolveIn(entries, 'vmlinuz') ?? resolveIn(entries, 'boot/vmlinuz') ?? newest('boot/vmlinuz-'),
    KERNEL,
  );
  const matching = kernel?.startsWith('boot/vmlinuz-')
    ? resolveIn(entries, `boot/initrd.img-${kernel.slice('boot/vmlinuz-'.length)}`)
    : undefined;
  const initrd = pick(
    resolveIn(entries, 'initrd.img') ??
      resolveIn(entries, 'boot/initrd.img') ??
      matching ??
      (kernel ? undefined : newest('boot/initrd.img-')),
    INITRD,
  );
  return { ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}) };
}

/** `base`, or `base.2`, `base.3`... when two packs under one name fall within the same second. */
async function freeName(base: string): Promise<string> {
  let name = base;
  for (let n = 2; await exists(name); n++) name = `${base}.${n}`;
  return name;
}

/**
 * A stored file placed in a pack: a hard link on the store's filesystem (stored files never
 * change), else a copy whose sha256 is checked before anything is switched to it.
 */
async function placeStored(artifact: Artifact, target: string, modes: FileModes): Promise<void> {
  try {
    await fs.link(artifact.path, target);
    return;
  } catch {
    await fs.copyFile(artifact.path, target);
  }
  const got = await sha256File(target);
  if (got !== artifact.sha256)
    throw new Error(`copy of ${artifact.path} has sha256 ${got}, expected ${artifact.sha256}`);
  await fs.chmod(target, modes.readOnly);
}

export function createNasPackActivities({ run, config, settings = nasSettings({}) }: NasDeps) {
  // Packs are private like the rest of the state directory; a site whose boot server reads them says so with IMGFLOW_HOME_MODE.
  const { modes } = settings;
  const nasRoot = paths(config).nas(config.host);
  const dirs: Record<PackKind, string> = { netboot: path.join(nasRoot, 'boot'), vm: path.join(nasRoot, 'vm') };

  /** /etc/shadow of a stored image, read without mounting it ('' when it has none). */
  async function readShadow(artifacts: Artifact[]): Promise<string> {
    const squash = artifacts.find((a) => a.format === 'squashfs');
    if (squash) return (await run(['unsquashfs', '-cat', squash.path, 'etc/shadow'], { okExitCodes: [1] })).stdout;
    const raw = artifacts.find((a) => a.format === 'raw');
    if (raw) return debugfsCat(raw.path);
    const qcow2 = artifacts.find((a) => a.format === 'qcow2');
    if (!qcow2) return '';
    // Named for this worker, so the next one removes it should this one die before it does.
    const tmp = await fs.mkdtemp(`${partialPath(path.join(nasRoot, 'pack'))}.`);
    try {
      await run(['qemu-img', 'convert', '-O', 'raw', qcow2.path, path.join(tmp, 'root.raw')]);
      return await debugfsCat(path.join(tmp, 'root.raw'));
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  async function debugfsCat(file: string): Promise<string> {
    return (await run(['debugfs', '-R', 'cat /etc/shadow', file])).stdout;
  }

  /** Another image's NAME is not this image's to switch: it would swap out their boot directory or VM base. */
  async function refuseOthers(kind: PackKind, link: string, input: PackInput): Promise<void> {
    const owner = await fs
      .readFile(path.join(link, 'version.json'), 'utf8')
      .then((text) => (JSON.parse(text) as { image?: unknown }).image)
      .catch(() => undefined); // none, or unreadable: a directory made by hand, moved aside as before
    if (typeof owner === 'string' && owner !== input.image) {
      throw ApplicationFailure.nonRetryable(
        new InputError(
          'as',
          `a name not taken by another image on ${config.host} (${input.name} is the ${kind} pack of ${owner})`,
          input.name,
        ).message,
        'InputError',
      );
    }
  }

  async function refuseHashes(input: PackInput): Promise<void> {
    if (input.allowPasswordHashes) return;
    const users = usersWithPasswords(await readShadow(input.artifacts));
    if (users.length)
      throw ApplicationFailure.nonRetryable(
        `${input.image}:${input.version} has password hashes in /etc/shadow (${users.join(', ')}); refusing to pack it (its recipe does not set allowPasswordHashes)`,
        'InputError',
      );
  }

  /** Copies the kernel and initrd out of the squashfs into the boot directory as `vmlinuz` and `initrd.img`. */
  async function extractBoot(squash: Artifact, fresh: string): Promise<PackContents> {
    const listing = await run(['unsquashfs', '-lls', '-no-wildcards', squash.path, 'vmlinuz', 'initrd.img', 'boot']);
    const found = bootFiles(listing.stdout);
    const wanted = [found.kernel, found.initrd].filter((f): f is string => f !== undefined);
    if (!wanted.length) return {};
    const tmp = path.join(fresh, '.extract');
    await run(['unsquashfs', '-no-xattrs', '-no-wildcards', '-no-progress', '-d', tmp, squash.path, ...wanted]);
    if (found.kernel) await fs.rename(path.join(tmp, found.kernel), path.join(fresh, 'vmlinuz'));
    if (found.initrd) await fs.rename(path.join(tmp, found.initrd), path.join(fresh, 'initrd.img'));
    // Files from the image keep the image's modes; in the pack they are as private as the rest.
    for (const name of ['vmlinuz', 'initrd.img'])
      await fs.chmod(path.join(fresh, name), modes.readOnly).catch(() => undefined);
    await fs.rm(tmp, { recursive: true, force: true });
    return found;
  }

  /**
   * Fills a fresh directory, then switches NAME to it and moves the previous one aside. A retry
   * after the switch finds its own directory in place and reports what it holds.
   */
  async function publish(
    kind: PackKind,
    input: PackInput,
    fill: (fresh: string) => Promise<PackContents & { root?: string }>,
  ): Promise<PackResult> {
    const dir = dirs[kind];
    const name = checkName('name', input.name);
    const link = path.join(dir, name);
    const fresh = path.join(dir, `.${name}.${checkName('version', input.version)}.${input.stamp}`);
    const current = await fs.readlink(link).catch(() => undefined);
    if (current === path.basename(fresh)) {
      const { contents } = JSON.parse(await fs.readFile(path.join(fresh, 'version.json'), 'utf8')) as {
        contents: PackContents;
      };
      return { host: config.host, path: link, ...contents, changed: false };
    }

    await refuseOthers(kind, link, input);
    await refuseHashes(input);
    await privateDir(dir, modes);
    await fs.rm(fresh, { recursive: true, force: true });
    await fs.mkdir(fresh, { mode: modes.dir });
    await fs.chmod(fresh, modes.dir);
    const { root, ...contents } = await fill(fresh);
    await fs.writeFile(
      path.join(fresh, 'version.json'),
      `${JSON.stringify({ image: input.image, version: input.version, tag: input.tag, packedAt: input.stamp, kind, contents })}\n`,
      { mode: modes.file },
    );

    const aside = await freeName(`${link}.moved.aside.on.${input.stamp}`);
    const st = await fs.lstat(link).catch(() => undefined);
    if (st?.isDirectory()) await fs.rename(link, aside); // a directory made by hand before imgflow
    const next = `${link}.${input.stamp}.next`;
    await fs.rm(next, { force: true });
    await fs.symlink(path.basename(fresh), next);
    await fs.rename(next, link);
    if (current && (await exists(path.join(dir, current)))) await fs.rename(path.join(dir, current), aside);
    const movedAside = current || st?.isDirectory() ? aside : undefined;
    return {
      host: config.host,
      path: link,
      ...contents,
      ...(root ? { root } : {}),
      ...(movedAside ? { movedAside } : {}),
      changed: true,
    };
  }

  return {
    /** A netboot boot directory: root.squashfs, and the image's vmlinuz and initrd.img when it has them. */
    async packBoot(input: PackInput): Promise<PackResult> {
      return publish('netboot', input, async (fresh) => {
        const squash = input.artifacts.find((a) => a.format === 'squashfs');
        if (!squash) return {};
        const root = path.join(fresh, 'root.squashfs');
        await placeStored(squash, root, modes);
        return { root, ...(await extractBoot(squash, fresh)) };
      });
    },

    /** A read-only VM base, `base.qcow2` (or `base.raw` for a version stored only as raw). */
    async packBase(input: PackInput): Promise<PackResult> {
      const base = input.artifacts.find((a) => a.format === 'qcow2') ?? input.artifacts.find((a) => a.format === 'raw');
      if (!base)
        throw ApplicationFailure.nonRetryable(
          `${input.image}:${input.version} has no qcow2 or raw artifact on ${config.host} to publish as a VM base`,
          'InputError',
        );
      const format = base.format as 'qcow2' | 'raw';
      return publish('vm', input, async (fresh) => {
        const root = path.join(fresh, `base.${format}`);
        await placeStored(base, root, modes);
        return { root, format };
      });
    },
  };
}

export type NasPackActivities = ReturnType<typeof createNasPackActivities>;
