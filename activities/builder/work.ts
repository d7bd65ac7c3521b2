/**
 * A build's work directory and its phase markers. A phase that finished writes a marker holding
 * the digest of its inputs and its result; run again with the same inputs (a retried activity, a
 * restarted worker) it returns that result instead of doing the work twice.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkArch, checkName } from '../../common/names.js';
import { paths, type Config } from '../../lib/config.js';
import { partialPath } from '../../lib/files.js';
import { digestOf } from './digest.js';

export interface BuildRef {
  /** The build's name: one work directory per build. */
  build: string;
  arch: string;
}

export interface BuildDirs {
  work: string;
  /** The image's root filesystem while it is built. */
  root: string;
  markers: string;
  outputs: string;
  manifest: string;
  /** Caches shared by this architecture's builds. */
  cache: string;
}

export function buildDirs(config: Pick<Config, 'home'>, ref: BuildRef): BuildDirs {
  const arch = checkArch('arch', ref.arch);
  const build = checkName('build', ref.build);
  const base = paths(config).builder(arch);
  const work = path.join(base, 'builds', build);
  return {
    work,
    root: path.join(work, 'root'),
    markers: path.join(work, 'markers'),
    outputs: path.join(work, 'outputs'),
    manifest: path.join(work, 'manifest.jsonl'),
    cache: path.join(base, 'cache'),
  };
}

interface Marker<T> {
  phase: string;
  inputs: string;
  result: T;
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const partial = partialPath(file);
  await fs.writeFile(partial, `${JSON.stringify(value, null, 2)}\n`);
  await fs.rename(partial, file);
}

async function readMarker<T>(file: string): Promise<Marker<T> | undefined> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as Marker<T>;
  } catch {
    return undefined;
  }
}

/**
 * Runs `work` unless a marker for `phase` with the same inputs exists; then returns the recorded
 * result with `resumed: true`. A phase that makes a new root (`replacesRoot`) clears all markers.
 */
export async function runPhaseOnce<T extends object>(
  dirs: BuildDirs,
  phase: string,
  inputs: unknown,
  work: () => Promise<T>,
  options: { replacesRoot?: boolean } = {},
): Promise<T & { resumed: boolean }> {
  checkName('phase', phase);
  const file = path.join(dirs.markers, `${phase}.json`);
  const digest = digestOf(inputs);
  const marker = await readMarker<T>(file);
  if (marker?.inputs === digest) return { ...marker.result, resumed: true };
  // A new root invalidates every later phase's marker: they worked on the old tree.
  if (options.replacesRoot) await fs.rm(dirs.markers, { recursive: true, force: true });
  const result = await work();
  await writeJsonAtomic(file, { phase, inputs: digest, result } satisfies Marker<T>);
  return { ...result, resumed: false };
}
