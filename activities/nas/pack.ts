/**
 * Packing on queue `nas.<host>`: publishes a stored version as a netboot boot directory
 * `<home>/nas/<host>/boot/<NAME>`. NAME is a symlink switched atomically (rename over it) to a
 * fresh directory holding the squashfs root image; the directory it pointed to is kept aside as
 * `<NAME>.moved.aside.on.<timestamp>`. An image whose /etc/shadow holds password hashes is refused.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { Artifact } from '../../common/lineage.js';
import { checkName } from '../../common/names.js';
import { paths, type Config } from '../../lib/config.js';
import { exists } from '../../lib/files.js';
import { isPasswordHash } from '../builder/prepare.js';
import type { Run } from '../runner.js';

export interface PackInput {
  image: string;
  version: string;
  tag: string;
  name: string;
  /** The time of the request, `YYYY-mm-dd-HH-MM-SS`: names the new directory and the one moved aside. */
  stamp: string;
  artifacts: Artifact[];
  allowPasswordHashes?: boolean;
}

export interface PackResult {
  host: string;
  path: string;
  root?: string;
  movedAside?: string;
  changed: boolean;
}

/** Users whose shadow entry holds a password hash. */
export function usersWithPasswords(shadow: string): string[] {
  return shadow
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length > 1 && isPasswordHash(f[1]!))
    .map((f) => f[0]!);
}

/** `base`, or `base.2`, `base.3`... when two packs under one name fall within the same second. */
async function freeName(base: string): Promise<string> {
  let name = base;
  for (let n = 2; await exists(name); n++) name = `${base}.${n}`;
  return name;
}

export function createNasPackActivities({ run, config }: { run: Run; config: Config }) {
  const nasRoot = paths(config).nas(config.host);
  const bootDir = path.join(nasRoot, 'boot');

  /** /etc/shadow of a stored image, read without mounting it ('' when it has none). */
  async function readShadow(artifacts: Artifact[]): Promise<string> {
    const squash = artifacts.find((a) => a.format === 'squashfs');
    if (squash) return (await run(['unsquashfs', '-cat', squash.path, 'etc/shadow'], { okExitCodes: [1] })).stdout;
    const raw = artifacts.find((a) => a.format === 'raw');
    if (raw) return debugfsCat(raw.path);
    const qcow2 = artifacts.find((a) => a.format === 'qcow2');
    if (!qcow2) return '';
    const tmp = await fs.mkdtemp(path.join(nasRoot, '.pack-'));
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

  return {
    async packBoot(input: PackInput): Promise<PackResult> {
      const name = checkName('name', input.name);
      const link = path.join(bootDir, name);
      const fresh = path.join(bootDir, `.${name}.${checkName('version', input.version)}.${input.stamp}`);
      const current = await fs.readlink(link).catch(() => undefined);
      // A retry after the switch finds its own directory in place.
      if (current === path.basename(fresh)) return { host: config.host, path: link, changed: false };

      if (!input.allowPasswordHashes) {
        const users = usersWithPasswords(await readShadow(input.artifacts));
        if (users.length) throw ApplicationFailure.nonRetryable(`${input.image}:${input.version} has password hashes in /etc/shadow (${users.join(', ')}); refusing to pack it`, 'InputError');
      }
      await fs.mkdir(bootDir, { recursive: true });
      await fs.rm(fresh, { recursive: true, force: true });
      await fs.mkdir(fresh);
      const squash = input.artifacts.find((a) => a.format === 'squashfs');
      const root = squash ? path.join(fresh, 'root.squashfs') : undefined;
      // Same filesystem as the store: a hard link costs nothing, and stored files never change.
      if (squash && root) await fs.link(squash.path, root).catch(() => fs.copyFile(squash.path, root));
      await fs.writeFile(path.join(fresh, 'version.json'), `${JSON.stringify({ image: input.image, version: input.version, tag: input.tag, packedAt: input.stamp })}\n`);

      const aside = await freeName(`${link}.moved.aside.on.${input.stamp}`);
      const st = await fs.lstat(link).catch(() => undefined);
      if (st?.isDirectory()) await fs.rename(link, aside); // a boot directory made by hand before imgflow
      const next = `${link}.${input.stamp}.next`;
      await fs.rm(next, { force: true });
      await fs.symlink(path.basename(fresh), next);
      await fs.rename(next, link);
      if (current && (await exists(path.join(bootDir, current)))) await fs.rename(path.join(bootDir, current), aside);
      const movedAside = current || st?.isDirectory() ? aside : undefined;
      return { host: config.host, path: link, ...(root ? { root } : {}), ...(movedAside ? { movedAside } : {}), changed: true };
    },
  };
}

export type NasPackActivities = ReturnType<typeof createNasPackActivities>;
