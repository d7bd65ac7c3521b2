/**
 * What an image holds, measured from the tree itself: installed packages from its dpkg status
 * database, disk usage like `du -sx`, and a manifest of every file.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { mapLimited } from '../../lib/concurrency.js';
import type { Run } from '../runner.js';
import { heartbeat, type InstalledPackage, type ManifestEntry } from '../shared/index.js';

export interface Measurement {
  packages: number;
  bytes: number;
}

/** Installed packages from dpkg's status file text: stanzas whose status is "installed". */
export function parseDpkgStatus(text: string): InstalledPackage[] {
  const installed: InstalledPackage[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
    }
    const name = fields.get('package');
    const status = fields.get('status')?.split(/\s+/);
    if (name && status?.[2] === 'installed') {
      installed.push({ name, version: fields.get('version') ?? '', arch: fields.get('architecture') ?? '' });
    }
  }
  return installed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function installedPackages(root: string): Promise<InstalledPackage[]> {
  const text = await fs.readFile(path.join(root, 'var/lib/dpkg/status'), 'utf8').catch(() => '');
  return parseDpkgStatus(text);
}

/** Disk usage of the tree in bytes, as `du -sx` counts it (blocks used, one filesystem). */
export async function diskUsage(run: Run, root: string): Promise<number> {
  const { stdout } = await run(['du', '-sxB1', '--', root]);
  const bytes = Number(stdout.split(/\s/)[0]);
  if (!Number.isFinite(bytes)) throw new Error(`du gave no size for ${root}: ${stdout.slice(0, 200)}`);
  return bytes;
}

export async function measureRoot(run: Run, root: string): Promise<Measurement> {
  return { packages: (await installedPackages(root)).length, bytes: await diskUsage(run, root) };
}

/** Files per sha256sum call, and calls at once (one per core here). */
const HASH_BATCH = 512;
const HASH_CONCURRENCY = 2;

/**
 * sha256 of regular files below root (paths as `/etc/passwd`), by coreutils' sha256sum in
 * batches: it reads and hashes many small files far faster than one by one here. `-z` keeps
 * names with any byte intact.
 */
async function hashFiles(run: Run, root: string, files: string[]): Promise<Map<string, string>> {
  const batches: string[][] = [];
  for (let i = 0; i < files.length; i += HASH_BATCH) batches.push(files.slice(i, i + HASH_BATCH));
  const digests = new Map<string, string>();
  await mapLimited(batches, HASH_CONCURRENCY, async (batch) => {
    const { stdout } = await run(['sha256sum', '-z', '--', ...batch.map((f) => `.${f}`)], { cwd: root });
    // Each record: 64 hex digits, two spaces, "./path".
    for (const record of stdout.split('\0')) if (record) digests.set(record.slice(67), record.slice(0, 64));
    heartbeat({ manifestFilesHashed: digests.size });
  });
  return digests;
}

/** Every entry below root in sorted order, without following symlinks or leaving the filesystem. */
async function* walk(root: string, dev: number, rel = ''): AsyncGenerator<ManifestEntry> {
  const names = (await fs.readdir(path.join(root, rel))).sort();
  const stats = await Promise.all(names.map((name) => fs.lstat(path.join(root, rel, name))));
  for (const [i, st] of stats.entries()) {
    const relPath = `${rel}/${names[i]}`;
    const base = {
      path: relPath,
      mode: (st.mode & 0o7777).toString(8).padStart(4, '0'),
      uid: st.uid,
      gid: st.gid,
      size: st.size,
    };
    if (st.isSymbolicLink()) yield { ...base, type: 'link', target: await fs.readlink(path.join(root, relPath)) };
    else if (st.isFile()) yield { ...base, type: 'file' };
    else if (st.isDirectory()) {
      yield { ...base, type: 'dir' };
      if (st.dev === dev) yield* walk(root, dev, relPath);
    } else yield { ...base, type: 'other' };
  }
}

/** Writes the manifest as JSON lines; returns its entry count and the digest of its text. */
export async function writeManifest(
  run: Run,
  root: string,
  target: string,
): Promise<{ entries: number; sha256: string }> {
  const { dev } = await fs.stat(root);
  const entries: ManifestEntry[] = [];
  for await (const entry of walk(root, dev)) entries.push(entry);
  const files = entries.filter((e) => e.type === 'file').map((e) => e.path);
  const digests = await hashFiles(run, root, files);
  const out = createWriteStream(target);
  const hash = createHash('sha256');
  for (const entry of entries) {
    const line = `${JSON.stringify(entry.type === 'file' ? { ...entry, sha256: digests.get(entry.path) } : entry)}\n`;
    hash.update(line);
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { entries: entries.length, sha256: hash.digest('hex') };
}
