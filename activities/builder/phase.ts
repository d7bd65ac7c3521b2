/**
 * What every build phase stands on: the build's work directory, its phase markers, its log and
 * the phase's report row. A phase that finished writes a marker holding the digest of its inputs
 * and its result; run again with the same inputs (a retried activity, a restarted worker) it
 * returns that result instead of doing the work twice. While a phase runs, every command it runs
 * goes into the build's log; when it is done, the tree is measured for the report.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkArch, checkName } from '../../common/names.js';
import { paths, type BuilderSettings, type Config } from '../../lib/config.js';
import { exists, partialPath } from '../../lib/files.js';
import { CommandError, stderrTail, type Run } from '../runner.js';
import { digestOf } from './digest.js';
import { measureRoot } from './measure.js';
import type { ReportRow } from './report.js';
import { releaseMounts } from './rootfs.js';

export const MINUTE = 60_000;

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
  /** What preparation recorded about the image (its private directories and sharing), for measure. */
  record: string;
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
    record: path.join(work, 'image.json'),
    cache: path.join(base, 'cache'),
  };
}

/** A phase's report row (the tree measured after it), and whether a marker stood in for the work. */
export interface PhaseResult extends ReportRow {
  /** True when a marker showed the phase had already finished with the same inputs. */
  resumed: boolean;
}

export function toReportRow(result: PhaseResult): ReportRow {
  return {
    phase: result.phase,
    durationMs: result.durationMs,
    packages: result.packages,
    bytes: result.bytes,
    ...(result.note ? { note: result.note } : {}),
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

export const BUILD_LOG = 'build.log';

/** The build log a phase's commands are written to (set while the phase runs). */
const transcript = new AsyncLocalStorage<{ file: string; phase: string }>();

/** Appends a command to the log of the phase it runs in: argv, outcome, and what it said on stderr. */
async function logCommand(argv: readonly string[], outcome: string, stderr: string): Promise<void> {
  const log = transcript.getStore();
  if (!log) return;
  const said = stderr ? `${stderrTail(stderr).replace(/^/gm, '    ')}\n` : '';
  await fs.appendFile(log.file, `[${log.phase}] $ ${argv.join(' ')}  (${outcome})\n${said}`);
}

/** The runner, writing each command that runs inside a phase (`runPhase`) into the build's log as well. */
export function loggingRunner(run: Run): Run {
  return async (argv, options) => {
    try {
      const result = await run(argv, options);
      await logCommand(argv, `exit ${result.exitCode}, ${(result.durationMs / 1000).toFixed(1)}s`, result.stderr);
      return result;
    } catch (err) {
      await logCommand(argv, 'failed', err instanceof CommandError ? err.stderrTail : (err as Error).message);
      throw err;
    }
  };
}

/**
 * A phase that changes the tree: run once per inputs (`runPhaseOnce`), its commands written to the
 * build's log, timed, and the tree measured after it for the phase's report row.
 */
export async function runPhase<T extends object>(
  run: Run,
  dirs: BuildDirs,
  phase: string,
  inputs: unknown,
  work: () => Promise<T & { note?: string }>,
  options: { replacesRoot?: boolean } = {},
): Promise<T & PhaseResult> {
  return runPhaseOnce(
    dirs,
    phase,
    inputs,
    async () => {
      const started = performance.now();
      await fs.mkdir(dirs.work, { recursive: true });
      const result = await transcript.run({ file: path.join(dirs.work, BUILD_LOG), phase }, work);
      const durationMs = Math.round(performance.now() - started);
      return { ...result, phase, durationMs, ...(await measureRoot(run, dirs.root)) };
    },
    options,
  );
}

export async function requireRoot(dirs: BuildDirs): Promise<void> {
  if (!(await exists(path.join(dirs.root, 'etc'))))
    throw new Error(`build ${dirs.work} has no image root yet: run bootstrap, capture or unpackTarball first`);
}

/** For phases that change the tree: it must exist, and mounts a crashed attempt left are released. */
export async function takeRoot(run: Run, dirs: BuildDirs): Promise<void> {
  await requireRoot(dirs);
  await releaseMounts(run, dirs.root);
}

/** `http_proxy` for the commands that fetch packages (debootstrap, apt) when the site has a mirror proxy. */
export function fetchEnv(settings: BuilderSettings): Record<string, string> {
  return settings.mirrorProxy ? { http_proxy: settings.mirrorProxy } : {};
}
