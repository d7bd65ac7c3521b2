/**
 * What an image holds, measured from the tree itself: installed packages from its dpkg status
 * database, disk usage like `du -sx`, and a manifest of every file.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { Context } from '@temporalio/activity';
import type { Run } from '../runner.js';

export interface InstalledPackage {
  name: string;
  version: string;
  arch: string;
}

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

export interface ManifestEntry {
  path: string;
  type: 'file' | 'dir' | 'link' | 'other';
  mode: string;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  target?: string;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Files hashed at once: a fresh image is mostly cold small files, where reads wait on the disk. */
const HASH_CONCURRENCY = 16;

/** Runs `fn` over `items` with at most `limit` at a time, results in the items' order. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/** One directory entry, described without following symlinks. */
async function describeEntry(root: string, relPath: string): Promise<{ entry: ManifestEntry; descend: boolean; dev: number }> {
  const file = path.join(root, relPath);
  const st = await fs.lstat(file);
  const base = { path: relPath, mode: (st.mode & 0o7777).toString(8).padStart(4, '0'), uid: st.uid, gid: st.gid, size: st.size };
  if (st.isSymbolicLink()) return { entry: { ...base, type: 'link', target: await fs.readlink(file) }, descend: false, dev: st.dev };
  if (st.isFile()) return { entry: { ...base, type: 'file', sha256: await sha256Of(file) }, descend: false, dev: st.dev };
  return { entry: { ...base, type: st.isDirectory() ? 'dir' : 'other' }, descend: st.isDirectory(), dev: st.dev };
}

/** Every entry below root in sorted order, without following symlinks or leaving the filesystem. */
async function* walk(root: string, dev: number, rel = ''): AsyncGenerator<ManifestEntry> {
  const names = (await fs.readdir(path.join(root, rel))).sort();
  const described = await mapLimited(names, HASH_CONCURRENCY, (name) => describeEntry(root, `${rel}/${name}`));
  for (const { entry, descend, dev: entryDev } of described) {
    yield entry;
    if (descend && entryDev === dev) yield* walk(root, dev, entry.path);
  }
}

/** Writes the manifest as JSON lines; returns its entry count and the digest of its text. */
/** Tells Temporal a long walk is alive; a no-op outside an activity. */
function heartbeat(details: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    /* not in an activity */
  }
}

export async function writeManifest(root: string, target: string): Promise<{ entries: number; sha256: string }> {
  const { dev } = await fs.stat(root);
  const out = createWriteStream(target);
  const hash = createHash('sha256');
  let entries = 0;
  for await (const entry of walk(root, dev)) {
    const line = `${JSON.stringify(entry)}\n`;
    hash.update(line);
    if (++entries % 2000 === 0) heartbeat({ manifestEntries: entries });
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { entries, sha256: hash.digest('hex') };
}
