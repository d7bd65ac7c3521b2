/**
 * What changed between two stored versions of an image, on queue `nas.<host>` where their
 * manifests live: packages from `packages.json`, files from `manifest.jsonl`. The comparison is a
 * pure function; the activity only reads the two pairs of files and checks their digests.
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { ApplicationFailure } from '@temporalio/activity';
import { sha256File } from '../../lib/files.js';
import type { InstalledPackage as Package, ManifestEntry } from '../shared/index.js';

/** A version's manifests as its record names them (paths on this NAS, with their digests). */
export interface DiffSide {
  id: string;
  bytes: number;
  manifests: { packages: { path: string; sha256: string }; files: { path: string; sha256: string } };
}

export interface VersionDiff {
  from: string;
  to: string;
  packages: {
    added: Package[];
    removed: Package[];
    changed: { name: string; arch: string; from: string; to: string }[];
  };
  /** Paths, each list cut at `limit` (the counts are always whole). */
  files: {
    added: string[];
    removed: string[];
    changed: string[];
    counts: { added: number; removed: number; changed: number };
  };
  bytes: { from: number; to: number; delta: number };
}

const pkgKey = (p: Package) => `${p.name}:${p.arch}`;

export function diffPackages(a: Package[], b: Package[]): VersionDiff['packages'] {
  const before = new Map(a.map((p) => [pkgKey(p), p]));
  const after = new Map(b.map((p) => [pkgKey(p), p]));
  const byName = (x: { name: string }, y: { name: string }) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
  return {
    added: b.filter((p) => !before.has(pkgKey(p))).sort(byName),
    removed: a.filter((p) => !after.has(pkgKey(p))).sort(byName),
    changed: b
      .filter((p) => before.has(pkgKey(p)) && before.get(pkgKey(p))!.version !== p.version)
      .map((p) => ({ name: p.name, arch: p.arch, from: before.get(pkgKey(p))!.version, to: p.version }))
      .sort(byName),
  };
}

/** What identifies an entry's content and metadata; the directory size the filesystem picks is not part of it. */
function fingerprint(e: ManifestEntry): string {
  return [e.type, e.mode, e.uid, e.gid, e.type === 'dir' ? '' : e.size, e.sha256 ?? '', e.target ?? ''].join('|');
}

export function diffFiles(a: ManifestEntry[], b: ManifestEntry[], limit = 1000): VersionDiff['files'] {
  const before = new Map(a.map((e) => [e.path, fingerprint(e)]));
  const after = new Map(b.map((e) => [e.path, fingerprint(e)]));
  const added = b.filter((e) => !before.has(e.path)).map((e) => e.path);
  const removed = a.filter((e) => !after.has(e.path)).map((e) => e.path);
  const changed = b.filter((e) => before.has(e.path) && before.get(e.path) !== after.get(e.path)).map((e) => e.path);
  return {
    added: added.slice(0, limit),
    removed: removed.slice(0, limit),
    changed: changed.slice(0, limit),
    counts: { added: added.length, removed: removed.length, changed: changed.length },
  };
}

export function diffVersions(
  from: { side: DiffSide; packages: Package[]; files: ManifestEntry[] },
  to: { side: DiffSide; packages: Package[]; files: ManifestEntry[] },
  limit?: number,
): VersionDiff {
  return {
    from: from.side.id,
    to: to.side.id,
    packages: diffPackages(from.packages, to.packages),
    files: diffFiles(from.files, to.files, limit),
    bytes: { from: from.side.bytes, to: to.side.bytes, delta: to.side.bytes - from.side.bytes },
  };
}

/** A stored manifest, refused when it is not the one the version recorded. */
async function checked(file: { path: string; sha256: string }): Promise<string> {
  const got = await sha256File(file.path).catch(() => undefined);
  if (got === undefined)
    throw ApplicationFailure.nonRetryable(
      `manifest ${file.path} is not in the store (was the version removed?)`,
      'InputError',
    );
  if (got !== file.sha256)
    throw ApplicationFailure.nonRetryable(`manifest ${file.path} differs from its recorded sha256`, 'ManifestChanged');
  return file.path;
}

async function readEntries(file: string): Promise<ManifestEntry[]> {
  const entries: ManifestEntry[] = [];
  for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity }))
    if (line.trim()) entries.push(JSON.parse(line) as ManifestEntry);
  return entries;
}

async function readSide(side: DiffSide) {
  const packages = JSON.parse(await fs.readFile(await checked(side.manifests.packages), 'utf8')) as Package[];
  return { side, packages, files: await readEntries(await checked(side.manifests.files)) };
}

export function createNasDiffActivities() {
  return {
    async diffManifests(input: { from: DiffSide; to: DiffSide; limit?: number }): Promise<VersionDiff> {
      return diffVersions(await readSide(input.from), await readSide(input.to), input.limit);
    },
  };
}

export type NasDiffActivities = ReturnType<typeof createNasDiffActivities>;
