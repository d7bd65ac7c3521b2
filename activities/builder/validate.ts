/**
 * Checks a tree against the rules preparation establishes and lists every breach; `fixRoot`
 * prepares again and returns what is still wrong (nothing, for a tree preparation can repair).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  EMPTY_DIRS,
  MACHINE_ID,
  MTAB,
  MTAB_TARGET,
  enablingLinks,
  isMasked,
  logFiles,
  networkIdentityFiles,
  prepareRoot,
  unitName,
} from './prepare.js';
import type { PrepareOptions } from './recipe.js';
import { inRoot, lstatOrUndefined } from './rootfs.js';
import { usersWithPasswords } from '../shared/index.js';

export interface Breach {
  rule: string;
  /** Path in the image. */
  path: string;
  detail: string;
}

type Check = (root: string, options: PrepareOptions) => Promise<Breach[]>;

const imagePath = (root: string, file: string) => `/${path.relative(root, file)}`;

const emptyDirs: Check = async (root) => {
  const breaches: Breach[] = [];
  for (const [dir, mode] of EMPTY_DIRS) {
    const host = await inRoot(root, dir);
    const st = host ? await lstatOrUndefined(host) : undefined;
    if (!host || !st?.isDirectory())
      breaches.push({ rule: 'empty-dir', path: dir, detail: 'missing or not a directory' });
    else {
      const count = (await fs.readdir(host)).length;
      const actual = st.mode & 0o7777;
      const problems = [
        count ? `${count} entries, expected none` : '',
        actual !== mode ? `mode ${actual.toString(8)}, expected ${mode.toString(8)}` : '',
      ].filter(Boolean);
      if (problems.length) breaches.push({ rule: 'empty-dir', path: dir, detail: problems.join('; ') });
    }
  }
  return breaches;
};

const logs: Check = async (root) => {
  const breaches: Breach[] = [];
  for (const file of await logFiles(root)) {
    const { size } = await fs.lstat(file);
    if (size > 0)
      breaches.push({ rule: 'log-truncated', path: imagePath(root, file), detail: `${size} bytes, expected 0` });
  }
  return breaches;
};

const mtab: Check = async (root) => {
  const host = await inRoot(root, MTAB);
  const st = host ? await lstatOrUndefined(host) : undefined;
  const target = host && st?.isSymbolicLink() ? await fs.readlink(host) : undefined;
  return target === MTAB_TARGET
    ? []
    : [
        {
          rule: 'mtab-link',
          path: MTAB,
          detail: `expected a link to ${MTAB_TARGET}, found ${target ?? (st ? 'a file' : 'nothing')}`,
        },
      ];
};

const hostname: Check = async (root, options) => {
  if (!options.hostname) return [];
  const host = await inRoot(root, '/etc/hostname');
  const text = host ? await fs.readFile(host, 'utf8').catch(() => undefined) : undefined;
  return text?.trim() === options.hostname
    ? []
    : [
        {
          rule: 'hostname',
          path: '/etc/hostname',
          detail: `expected ${options.hostname}, found ${JSON.stringify(text?.trim() ?? null)}`,
        },
      ];
};

const networkIdentity: Check = async (root, options) => {
  if (options.network !== 'remove') return [];
  const breaches = (await networkIdentityFiles(root)).map((file) => ({
    rule: 'network-identity',
    path: imagePath(root, file),
    detail: 'present, expected removed',
  }));
  const host = await inRoot(root, MACHINE_ID);
  const st = host ? await lstatOrUndefined(host) : undefined;
  if (!st?.isFile() || st.size > 0)
    breaches.push({
      rule: 'machine-id',
      path: MACHINE_ID,
      detail: st
        ? `${st.isFile() ? `${st.size} bytes` : 'not a file'}, expected an empty file`
        : 'missing, expected an empty file',
    });
  return breaches;
};

const services: Check = async (root, options) => {
  const breaches: Breach[] = [];
  for (const name of options.removeServices) {
    const unit = unitName(name);
    for (const link of await enablingLinks(root, unit))
      breaches.push({ rule: 'service-disabled', path: imagePath(root, link), detail: `${unit} still enabled` });
    if (!(await isMasked(root, unit)))
      breaches.push({ rule: 'service-masked', path: `/etc/systemd/system/${unit}`, detail: `${unit} not masked` });
  }
  return breaches;
};

const passwords: Check = async (root, options) => {
  if (options.allowPasswordHashes) return [];
  const host = await inRoot(root, '/etc/shadow');
  const text = host ? await fs.readFile(host, 'utf8').catch(() => '') : '';
  return usersWithPasswords(text).map((user) => ({
    rule: 'password-hash',
    path: '/etc/shadow',
    detail: `user ${user} has a password hash`,
  }));
};

const CHECKS: Check[] = [emptyDirs, logs, mtab, hostname, networkIdentity, services, passwords];

export async function validateRoot(root: string, options: PrepareOptions): Promise<Breach[]> {
  const results = await Promise.all(CHECKS.map((check) => check(root, options)));
  return results.flat();
}

/** Prepares again; returns the breaches found before and those left after. */
export async function fixRoot(root: string, options: PrepareOptions): Promise<{ before: Breach[]; after: Breach[] }> {
  const before = await validateRoot(root, options);
  if (before.length) await prepareRoot(root, options);
  return { before, after: before.length ? await validateRoot(root, options) : [] };
}

export function formatBreaches(breaches: Breach[]): string {
  return breaches.map((b) => `${b.rule}: ${b.path}: ${b.detail}`).join('\n');
}
