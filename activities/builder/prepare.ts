/**
 * Preparation turns a built tree into an image many machines can boot: no runtime leftovers, no
 * identity of the machine it was built or captured on, services the site does not want disabled.
 * Plain file operations on the tree; nothing runs inside it. validate.ts checks the same rules.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { PrepareOptions, PrivateDir } from './recipe.js';
import { inRoot, lstatOrUndefined, mountsUnder } from './rootfs.js';
import { isPasswordHash } from '../shared/index.js';

/** Directories the running system fills: shipped empty, with their usual modes. */
export const EMPTY_DIRS: ReadonlyArray<readonly [string, number]> = [
  ['/proc', 0o555],
  ['/sys', 0o555],
  ['/dev', 0o755],
  ['/run', 0o755],
  ['/tmp', 0o1777],
  ['/mnt', 0o755],
];
export const LOG_DIR = '/var/log';
export const MTAB = '/etc/mtab';
export const MTAB_TARGET = '/proc/self/mounts';
export const MACHINE_ID = '/etc/machine-id';
export const PERSISTENT_NET_RULES = '/etc/udev/rules.d/70-persistent-net.rules';
export const SSH_DIR = '/etc/ssh';
export const LEASE_DIRS = ['/var/lib/dhcp', '/var/lib/dhclient', '/var/lib/NetworkManager'];
export const SYSTEMD_DIR = '/etc/systemd/system';

export interface PrepareSummary {
  emptied: string[];
  truncatedLogs: number;
  removedIdentity: string[];
  disabledServices: string[];
  lockedPasswords: number;
  private: PrivateDir[];
  shared: boolean;
}

/** A unit name with its type: `cron` means `cron.service`. */
export function unitName(name: string): string {
  return /\.(service|socket|timer|path|mount|target)$/.test(name) ? name : `${name}.service`;
}

export const isSshHostKey = (name: string) =>
  /^ssh_host_.*_key(\.pub)?$/.test(name) || /^ssh_host_key(\.pub)?$/.test(name);
export const isLease = (name: string) =>
  /\.leases?$/.test(name) || /^dhclient.*\.(lease|leases|conf\.lease)$/.test(name);

/** Refuses a tree with something mounted in it: emptying /proc there would reach the kernel's. */
export async function assertNothingMounted(root: string): Promise<void> {
  const mounts = await mountsUnder(root);
  if (mounts.length)
    throw new Error(`refusing to prepare ${root}: filesystems are mounted under it: ${mounts.join(', ')}`);
}

async function entries(dir: string): Promise<string[]> {
  return fs.readdir(dir).catch(() => []);
}

/** Makes `inside` an empty directory with its usual mode, replacing a symlink or file in its place. */
async function emptyDir(root: string, inside: string, mode: number): Promise<boolean> {
  const dir = await inRoot(root, inside);
  if (!dir) return false;
  const st = await lstatOrUndefined(dir);
  if (st && !st.isDirectory()) await fs.rm(dir, { force: true });
  if (!st || !st.isDirectory()) {
    await fs.mkdir(dir);
    await fs.chmod(dir, mode);
    return true;
  }
  const names = await entries(dir);
  await Promise.all(names.map((name) => fs.rm(path.join(dir, name), { recursive: true, force: true })));
  const wrongMode = (st.mode & 0o7777) !== mode;
  if (wrongMode) await fs.chmod(dir, mode);
  return names.length > 0 || wrongMode;
}

/** Regular files under the log directory, found without following symlinks. */
export async function logFiles(root: string): Promise<string[]> {
  const base = await inRoot(root, LOG_DIR);
  if (!base || !(await lstatOrUndefined(base))?.isDirectory()) return [];
  const found: string[] = [];
  const visit = async (dir: string) => {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) await visit(file);
      else if (entry.isFile()) found.push(file);
    }
  };
  await visit(base);
  return found;
}

async function truncateLogs(root: string): Promise<number> {
  let count = 0;
  for (const file of await logFiles(root)) {
    if ((await fs.lstat(file)).size > 0) {
      await fs.truncate(file, 0);
      count++;
    }
  }
  return count;
}

async function linkMtab(root: string): Promise<void> {
  const mtab = await inRoot(root, MTAB);
  if (!mtab) return;
  const st = await lstatOrUndefined(mtab);
  if (st?.isSymbolicLink() && (await fs.readlink(mtab)) === MTAB_TARGET) return;
  await fs.rm(mtab, { recursive: true, force: true });
  await fs.mkdir(path.dirname(mtab), { recursive: true });
  await fs.symlink(MTAB_TARGET, mtab);
}

async function writeHostname(root: string, hostname: string): Promise<void> {
  const file = await inRoot(root, '/etc/hostname');
  if (!file) return;
  await fs.rm(file, { force: true });
  await fs.writeFile(file, `${hostname}\n`);
}

/** Host paths of the files that tie an image to one machine's network identity. */
export async function networkIdentityFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  const rules = await inRoot(root, PERSISTENT_NET_RULES);
  if (rules && (await lstatOrUndefined(rules))) found.push(rules);
  const ssh = await inRoot(root, `${SSH_DIR}/x`);
  if (ssh)
    for (const name of await entries(path.dirname(ssh)))
      if (isSshHostKey(name)) found.push(path.join(path.dirname(ssh), name));
  for (const inside of LEASE_DIRS) {
    const dir = await inRoot(root, `${inside}/x`);
    if (dir)
      for (const name of await entries(path.dirname(dir)))
        if (isLease(name)) found.push(path.join(path.dirname(dir), name));
  }
  return found;
}

async function removeNetworkIdentity(root: string): Promise<string[]> {
  const removed = await networkIdentityFiles(root);
  await Promise.all(removed.map((file) => fs.rm(file, { force: true })));
  const machineId = await inRoot(root, MACHINE_ID);
  if (machineId) {
    const st = await lstatOrUndefined(machineId);
    if (!st?.isFile() || st.size > 0) {
      await fs.rm(machineId, { recursive: true, force: true });
      await fs.writeFile(machineId, '', { mode: 0o444 });
      removed.push(machineId);
    }
  }
  return removed.map((file) => `/${path.relative(root, file)}`);
}

/** `<unit>` links in the image's `*.wants`/`*.requires` directories: what enables it at boot. */
export async function enablingLinks(root: string, unit: string): Promise<string[]> {
  const dir = await inRoot(root, `${SYSTEMD_DIR}/x`);
  if (!dir) return [];
  const systemd = path.dirname(dir);
  const links: string[] = [];
  for (const sub of await entries(systemd)) {
    if (!/\.(wants|requires)$/.test(sub)) continue;
    const link = path.join(systemd, sub, unit);
    if (await lstatOrUndefined(link)) links.push(link);
  }
  return links;
}

export async function isMasked(root: string, unit: string): Promise<boolean> {
  const file = await inRoot(root, `${SYSTEMD_DIR}/${unit}`);
  const st = file ? await lstatOrUndefined(file) : undefined;
  return !!file && !!st?.isSymbolicLink() && (await fs.readlink(file)) === '/dev/null';
}

async function disableService(root: string, name: string): Promise<string> {
  const unit = unitName(name);
  for (const link of await enablingLinks(root, unit)) await fs.rm(link, { force: true });
  const mask = await inRoot(root, `${SYSTEMD_DIR}/${unit}`);
  if (mask && !(await isMasked(root, unit))) {
    await fs.mkdir(path.dirname(mask), { recursive: true });
    await fs.rm(mask, { recursive: true, force: true });
    await fs.symlink('/dev/null', mask);
  }
  return unit;
}

/** Replaces password hashes in /etc/shadow with `*` (login by password disabled). */
async function lockPasswords(root: string): Promise<number> {
  const shadow = await inRoot(root, '/etc/shadow');
  const st = shadow ? await lstatOrUndefined(shadow) : undefined;
  if (!shadow || !st?.isFile()) return 0;
  let count = 0;
  const lines = (await fs.readFile(shadow, 'utf8')).split('\n').map((line) => {
    const fields = line.split(':');
    if (fields.length < 2 || !isPasswordHash(fields[1]!)) return line;
    count++;
    fields[1] = '*';
    return fields.join(':');
  });
  if (count) await fs.writeFile(shadow, lines.join('\n'), { mode: st.mode & 0o7777 });
  return count;
}

/** Prepares the tree in place. Safe to repeat: a prepared tree is left as it is. */
export async function prepareRoot(root: string, options: PrepareOptions): Promise<PrepareSummary> {
  await assertNothingMounted(root);
  const emptied: string[] = [];
  for (const [dir, mode] of EMPTY_DIRS) if (await emptyDir(root, dir, mode)) emptied.push(dir);
  const truncatedLogs = await truncateLogs(root);
  await linkMtab(root);
  if (options.hostname) await writeHostname(root, options.hostname);
  const removedIdentity = options.network === 'remove' ? await removeNetworkIdentity(root) : [];
  const disabledServices: string[] = [];
  for (const name of options.removeServices) disabledServices.push(await disableService(root, name));
  const lockedPasswords = options.allowPasswordHashes ? 0 : await lockPasswords(root);
  return {
    emptied,
    truncatedLogs,
    removedIdentity,
    disabledServices,
    lockedPasswords,
    private: options.private,
    shared: options.shared,
  };
}
