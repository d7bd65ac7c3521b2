/**
 * The build phases as activities. Each works in the build's directory, records a marker when it
 * finishes (so a retry after a crash does not redo it), measures the tree afterwards for the
 * report and returns small JSON: names, digests, counts, sizes.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { debianArch } from '../../common/arch.js';
import { InputError, checkArch, checkName } from '../../common/names.js';
import { shortHostName, type Config } from '../../lib/config.js';
import { exists, partialPath, sha256File } from '../../lib/files.js';
import { CommandError, progress, stderrTail, type Run } from '../runner.js';
import { digestOf } from './digest.js';
import { installedPackages, measureRoot, writeManifest } from './measure.js';
import { prepareRoot, assertNothingMounted } from './prepare.js';
import {
  bootstrapKey,
  builderRootRefusal,
  checkHookInput,
  checkOutputsInput,
  checkPackagesInput,
  checkPrepareInput,
  checkSourceInput,
  type CaptureSource,
  type DebootstrapSource,
  type Hook,
  type OutputFormat,
  type PrepareOptions,
  type PrivateDir,
  type TarballSource,
  isLoopbackHost,
} from './recipe.js';
import type { ReportRow } from './report.js';
import { checkTreeArch } from './arch.js';
import { CHROOT_ENV, ensureProcDir, inImageArgv, inRoot, lstatOrUndefined, releaseMounts, removeTree } from './rootfs.js';
import { fixRoot, validateRoot, type Breach } from './validate.js';
import { buildDirs, runPhaseOnce, writeJsonAtomic, type BuildDirs, type BuildRef } from './work.js';

/** `http_proxy` for the commands that fetch packages, from IMGFLOW_MIRROR_PROXY (an http:// URL). */
function mirrorProxyEnv(proxy: string | undefined): Record<string, string> {
  if (proxy === undefined || proxy === '') return {};
  if (!/^http:\/\/[A-Za-z0-9.-]+:\d{1,5}\/?$/.test(proxy)) throw new InputError('IMGFLOW_MIRROR_PROXY', 'an http://HOST:PORT proxy URL', proxy);
  return { http_proxy: proxy };
}

/** How this worker reaches hosts it captures: its key and the host keys it trusts. */
export interface SshOptions {
  identityFile?: string;
  knownHostsFile?: string;
}

export interface PhaseDeps {
  run: Run;
  config: Config;
  ssh?: SshOptions;
  env?: NodeJS.ProcessEnv;
}

export interface PhaseResult {
  phase: string;
  durationMs: number;
  /** Installed packages measured after the phase. */
  packages: number;
  /** Disk usage of the tree measured after the phase. */
  bytes: number;
  /** Why the phase did less than usual, e.g. a cache hit; shown in the report. */
  note?: string;
  /** True when a marker showed the phase had already finished with the same inputs. */
  resumed: boolean;
}

export const BUILD_LOG = 'build.log';

export const BOOTSTRAP_REUSED = 'bootstrap reused: same suite, variant, mirror, packages';

/** Default exclusions of a capture: the contents of the running system's virtual directories. */
export const CAPTURE_EXCLUDES = ['/proc/*', '/sys/*', '/dev/*', '/run/*', '/tmp/*'];

const MINUTE = 60_000;
/** rsync exit codes worth another attempt: connection and transport failures, timeouts. */
const RSYNC_TRANSIENT = [10, 12, 30, 35, 255];
const SAFE_FILE = /^\/[A-Za-z0-9._+@\/-]*$/;
const TAR_FLAGS = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls'];

export function toReportRow(result: PhaseResult): ReportRow {
  return { phase: result.phase, durationMs: result.durationMs, packages: result.packages, bytes: result.bytes, ...(result.note ? { note: result.note } : {}) };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The build log a phase's commands are written to (set while the phase runs). */
const transcript = new AsyncLocalStorage<{ file: string; phase: string }>();

/** Appends a command to the log of the phase it runs in: argv, outcome, and what it said on stderr. */
async function logCommand(argv: readonly string[], outcome: string, stderr: string): Promise<void> {
  const log = transcript.getStore();
  if (!log) return;
  const said = stderr ? `${stderrTail(stderr).replace(/^/gm, '    ')}\n` : '';
  await fs.appendFile(log.file, `[${log.phase}] $ ${argv.join(' ')}  (${outcome})\n${said}`);
}

export function createPhaseActivities({ run: runCommand, config, ssh = {}, env = process.env }: PhaseDeps) {
  // A builder with no route out fetches packages through the site's proxy; only those commands get it.
  const fetchEnv = mirrorProxyEnv(env.IMGFLOW_MIRROR_PROXY);
  /** The runner, writing each command of a phase into the build's log as well. */
  const run: Run = async (argv, options) => {
    try {
      const result = await runCommand(argv, options);
      await logCommand(argv, `exit ${result.exitCode}, ${(result.durationMs / 1000).toFixed(1)}s`, result.stderr);
      return result;
    } catch (err) {
      await logCommand(argv, 'failed', err instanceof CommandError ? err.stderrTail : (err as Error).message);
      throw err;
    }
  };

  /** Times `work` and measures the tree after it: the phase's report row. */
  async function timed<T extends object>(phase: string, dirs: BuildDirs, work: () => Promise<T & { note?: string }>): Promise<T & Omit<PhaseResult, 'resumed'>> {
    const started = performance.now();
    await fs.mkdir(dirs.work, { recursive: true });
    const result = await transcript.run({ file: path.join(dirs.work, BUILD_LOG), phase }, work);
    const durationMs = Math.round(performance.now() - started);
    return { ...result, phase, durationMs, ...(await measureRoot(run, dirs.root)) };
  }

  async function requireRoot(dirs: BuildDirs): Promise<void> {
    if (!(await exists(path.join(dirs.root, 'etc')))) throw new Error(`build ${dirs.work} has no image root yet: run bootstrap, capture or unpackTarball first`);
  }

  /** For phases that change the tree: it must exist, and mounts a crashed attempt left are released. */
  async function takeRoot(dirs: BuildDirs): Promise<void> {
    await requireRoot(dirs);
    await releaseMounts(run, dirs.root);
  }

  /** Fills a fresh partial tree with `fill`, then puts it in place of the root atomically. */
  async function replaceRoot(dirs: BuildDirs, fill: (partial: string) => Promise<void>): Promise<void> {
    const partial = partialPath(dirs.root);
    if (await exists(partial)) await removeTree(run, partial);
    await fs.mkdir(partial, { recursive: true, mode: 0o755 });
    await fill(partial);
    if (await exists(dirs.root)) await removeTree(run, dirs.root);
    await fs.rename(partial, dirs.root);
  }

  /**
   * debootstrap in two stages: the first only downloads and unpacks, on the host; the second runs
   * the packages' own scripts, so it runs isolated in the image like any other image code.
   */
  async function debootstrapInto(target: string, arch: string, source: DebootstrapSource): Promise<void> {
    const argv = ['debootstrap', '--foreign', `--arch=${debianArch(checkArch('arch', arch))}`, `--components=${source.components.join(',')}`];
    if (source.variant !== 'default') argv.push(`--variant=${source.variant}`);
    if (source.packages.length) argv.push(`--include=${source.packages.join(',')}`);
    const stages = [
      () => run([...argv, source.suite, target, source.mirror], { env: fetchEnv, timeoutMs: 60 * MINUTE, okExitCodes: [1] }),
      async () => {
        await ensureProcDir(target);
        return run(inImageArgv(target, ['/debootstrap/debootstrap', '--second-stage']), { env: CHROOT_ENV, timeoutMs: 60 * MINUTE, okExitCodes: [1] });
      },
    ];
    for (const stage of stages) {
      // debootstrap prints its errors ("E: ...") on stdout: the failure carries the last one.
      const result = await stage();
      if (result.exitCode !== 0) {
        const error = result.stdout.split('\n').filter((line) => line.startsWith('E: ')).at(-1)?.slice(3) ?? `exit code ${result.exitCode}`;
        throw new Error(`debootstrap of ${source.suite} from ${source.mirror} failed: ${error}`);
      }
    }
  }

  /** Stores a finished bootstrap tree as a tarball under its key, for builds with the same inputs. */
  async function cacheTree(tree: string, tarball: string): Promise<void> {
    await fs.mkdir(path.dirname(tarball), { recursive: true });
    // Builds with the same key may finish together: each writes its own partial, the last rename wins.
    const partial = `${partialPath(tarball)}.${randomUUID().slice(0, 8)}`;
    try {
      await run(['tar', ...TAR_FLAGS, '-C', tree, '-cf', partial, '.'], { timeoutMs: 30 * MINUTE });
      await fs.rename(partial, tarball);
    } finally {
      await fs.rm(partial, { force: true });
    }
  }

  async function extract(tarball: string, target: string): Promise<void> {
    await run(['tar', ...TAR_FLAGS, '-xpf', tarball, '-C', target], { timeoutMs: 30 * MINUTE });
  }

  /** The `-e` value rsync splits into ssh's argv itself (no shell): every part is checked first. */
  function sshCommand(source: CaptureSource, connectTimeoutSeconds: number): string {
    const parts = ['ssh', '-o', 'BatchMode=yes', '-o', `ConnectTimeout=${connectTimeoutSeconds}`, '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4'];
    if (source.port) parts.push('-p', String(source.port));
    if (ssh.identityFile) parts.push('-i', checkFile('ssh.identityFile', ssh.identityFile), '-o', 'IdentitiesOnly=yes');
    if (ssh.knownHostsFile) parts.push('-o', `UserKnownHostsFile=${checkFile('ssh.knownHostsFile', ssh.knownHostsFile)}`, '-o', 'StrictHostKeyChecking=yes');
    return parts.join(' ');
  }

  async function rsyncWithRetries(argv: string[], source: CaptureSource, attempts: number, timeoutMs: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await run(argv, { okExitCodes: [24], timeoutMs, progress: progress.rsync });
        return;
      } catch (error) {
        const transient = error instanceof CommandError && (error.exitCode === undefined || RSYNC_TRANSIENT.includes(error.exitCode));
        if (!transient) throw error;
        if (attempt >= attempts) {
          const where = source.host ? `${source.host}${source.port ? ` port ${source.port}` : ''}` : source.path;
          const detail = error.stderrTail.split('\n').filter(Boolean).at(0) ?? error.message;
          throw new Error(`capture: cannot reach ${where} after ${attempts} attempts: ${detail}`);
        }
        await sleep(1000 * attempt);
      }
    }
  }

  /** Whether a capture would copy this builder's own root: `/` however reached (symlinks, bind mounts). */
  async function isBuilderRoot(source: CaptureSource): Promise<boolean> {
    if (source.host && !isLoopbackHost(source.host) && source.host !== config.host && source.host !== shortHostName()) return false;
    const [target, root] = await Promise.all([fs.stat(source.path).catch(() => undefined), fs.stat('/')]);
    return target !== undefined && target.dev === root.dev && target.ino === root.ino;
  }

  async function downloadTarball(dirs: BuildDirs, source: TarballSource): Promise<string> {
    const target = path.join(dirs.cache, 'tarballs', `${source.sha256}.tar`);
    if (await exists(target)) return target;
    await fs.mkdir(path.dirname(target), { recursive: true });
    const partial = partialPath(target);
    const response = await fetch(source.url!, { signal: AbortSignal.timeout(60 * MINUTE) });
    if (!response.ok || !response.body) throw new Error(`tarball ${source.url}: HTTP ${response.status}`);
    await pipeline(Readable.fromWeb(response.body), createWriteStream(partial));
    await fs.rename(partial, target);
    return target;
  }

  /** Runs image code: isolated from the build host in namespaces of its own (see `inImageArgv`). */
  async function runInRoot(dirs: BuildDirs, argv: string[], extraEnv: Record<string, string> = {}, timeoutMs = 60 * MINUTE) {
    await ensureProcDir(dirs.root);
    return run(inImageArgv(dirs.root, argv), { env: { ...CHROOT_ENV, ...extraEnv }, timeoutMs });
  }

  /**
   * Puts `content` at `inside` for the duration of `fn` and then restores what was there. The
   * image's own entry (possibly a symlink, which must not be followed) is moved aside, not written.
   */
  async function withTemporaryFile<T>(dirs: BuildDirs, inside: string, content: string | Buffer, mode: number, fn: () => Promise<T>): Promise<T> {
    const file = await inRoot(dirs.root, inside);
    if (!file) throw new Error(`${inside} in ${dirs.root} is reached through a symlink; refusing to write there`);
    const aside = `${file}.imgflow-aside`;
    // Present while `file` is ours: a worker killed inside `fn` leaves it, and the retry cleans up.
    const ours = `${file}.imgflow-temporary`;
    await fs.mkdir(path.dirname(file), { recursive: true });
    await restoreAside(file, aside, ours);
    const had = (await lstatOrUndefined(file)) !== undefined;
    if (had) await fs.rename(file, aside);
    try {
      await fs.writeFile(ours, '');
      await fs.writeFile(file, content, { mode, flag: 'wx' });
      return await fn();
    } finally {
      await fs.rm(file, { force: true });
      await fs.rm(ours, { force: true });
      if (had) await fs.rename(aside, file);
    }
  }

  /** Undoes what a killed attempt of `withTemporaryFile` left: its own file out, the image's back. */
  async function restoreAside(file: string, aside: string, ours: string): Promise<void> {
    if (await lstatOrUndefined(ours)) await fs.rm(file, { force: true });
    await fs.rm(ours, { force: true });
    if ((await lstatOrUndefined(aside)) && !(await lstatOrUndefined(file))) await fs.rename(aside, file);
  }

  /** Package scripts may not start services in the build host's chroot (policy-rc.d says no). */
  const withoutServiceStarts = <T>(dirs: BuildDirs, fn: () => Promise<T>) => withTemporaryFile(dirs, '/usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', 0o755, fn);

  /** apt in the chroot resolves names with the build host's resolver, only while it runs. */
  const withHostResolver = async <T>(dirs: BuildDirs, fn: () => Promise<T>) => withTemporaryFile(dirs, '/etc/resolv.conf', await fs.readFile('/etc/resolv.conf'), 0o644, fn);

  return {
    /** debootstrap, or the cached tree of an earlier bootstrap with the same key. */
    async bootstrap(input: BuildRef & { source: DebootstrapSource }): Promise<PhaseResult & { cacheKey: string; cacheHit: boolean }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('debootstrap', input.source);
      const cacheKey = bootstrapKey(input.arch, source);
      return runPhaseOnce(dirs, 'bootstrap', { arch: input.arch, source }, () =>
        timed('bootstrap', dirs, async () => {
          const cached = path.join(dirs.cache, 'bootstrap', `${cacheKey}.tar`);
          const cacheHit = await exists(cached);
          await replaceRoot(dirs, async (partial) => {
            if (cacheHit) return extract(cached, partial);
            await debootstrapInto(partial, input.arch, source);
            await checkTreeArch(partial, checkArch('arch', input.arch));
            await cacheTree(partial, cached);
          });
          return { cacheKey, cacheHit, ...(cacheHit ? { note: BOOTSTRAP_REUSED } : {}) };
        }),
        { replacesRoot: true },
      );
    },

    /**
     * A host's root filesystem over rsync (ssh for a remote host), with bounded attempts. The
     * builder's own root only when the recipe allows it, and then without imgflow's state.
     */
    async capture(input: BuildRef & { source: CaptureSource; attempts?: number; connectTimeoutSeconds?: number; timeoutMinutes?: number }): Promise<PhaseResult & { from: string; builderRoot?: true }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('capture', input.source);
      const builderRoot = await isBuilderRoot(source);
      if (builderRoot && !source.allowBuilderRoot) throw builderRootRefusal(source.host ? `${source.host}:${source.path}` : source.path, 'resolves to');
      const attempts = Math.min(Math.max(input.attempts ?? 3, 1), 10);
      const connectTimeout = Math.min(Math.max(input.connectTimeoutSeconds ?? 10, 1), 120);
      const from = source.host ? `${source.user ?? 'root'}@${source.host}:${source.path}` : source.path;
      return runPhaseOnce(dirs, 'capture', { source, arch: input.arch }, () =>
        timed('capture', dirs, async () => {
          await fs.mkdir(dirs.root, { recursive: true, mode: 0o755 });
          const excludes = [...CAPTURE_EXCLUDES, ...(builderRoot ? [config.home] : []), ...source.excludes].map((pattern) => `--exclude=${pattern}`);
          const transport = source.host ? ['-e', sshCommand(source, connectTimeout)] : [];
          // Copying into the root itself lets a later attempt continue where a failed one stopped.
          const argv = ['rsync', '-aHAX', '--numeric-ids', '--delete', '--timeout=120', '--info=progress2', ...excludes, ...transport, '--', `${from.replace(/\/+$/, '')}/`, `${dirs.root}/`];
          await rsyncWithRetries(argv, source, attempts, (input.timeoutMinutes ?? 120) * MINUTE);
          return { from, ...(builderRoot ? { builderRoot: true as const } : {}) };
        }),
        { replacesRoot: true },
      );
    },

    /** A root filesystem tarball, used only if its sha256 is the one the recipe names. */
    async unpackTarball(input: BuildRef & { source: TarballSource }): Promise<PhaseResult & { sha256: string }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('tarball', input.source);
      return runPhaseOnce(dirs, 'tarball', { source, arch: input.arch }, () =>
        timed('tarball', dirs, async () => {
          const file = source.url ? await downloadTarball(dirs, source) : source.path!;
          const actual = await sha256File(file);
          if (actual !== source.sha256) {
            if (source.url) await fs.rm(file, { force: true });
            throw new InputError('source.tarball.sha256', `the digest of ${source.url ?? file} (${actual})`, source.sha256);
          }
          await replaceRoot(dirs, (partial) => extract(file, partial));
          return { sha256: actual };
        }),
        { replacesRoot: true },
      );
    },

    /** apt-get install in the image, isolated with its own /proc, without recommends or service starts. */
    async installPackages(input: BuildRef & { packages: string[] }): Promise<PhaseResult & { requested: number }> {
      const dirs = buildDirs(config, input);
      const packages = checkPackagesInput(input.packages);
      return runPhaseOnce(dirs, 'packages', { packages, arch: input.arch }, () =>
        timed('packages', dirs, async () => {
          await takeRoot(dirs);
          if (packages.length === 0) return { requested: 0 };
          await assertNothingMounted(dirs.root);
          await withHostResolver(dirs, () =>
            withoutServiceStarts(dirs, async () => {
              await runInRoot(dirs, ['apt-get', 'update'], fetchEnv);
              await runInRoot(dirs, ['apt-get', 'install', '-y', '--no-install-recommends', '--', ...packages], fetchEnv);
              await runInRoot(dirs, ['apt-get', 'clean']);
            }),
          );
          return { requested: packages.length };
        }),
      );
    },

    /** One hook: its argv (or its script, copied in from the recipe's directory) run isolated in the image. */
    async runHook(input: BuildRef & { hook: Hook }): Promise<PhaseResult & { hook: string; layer: string }> {
      const dirs = buildDirs(config, input);
      const hook = checkHookInput(input.hook);
      const phase = `hook-${hook.name}`;
      checkName('hook', phase);
      return runPhaseOnce(dirs, phase, { hook, arch: input.arch }, () =>
        timed(phase, dirs, async () => {
          await takeRoot(dirs);
          await assertNothingMounted(dirs.root);
          if (!hook.file) await runInRoot(dirs, hook.argv);
          else {
            // The script runs as checked when the recipe was read, or not at all.
            const script = await fs.readFile(hook.file.path);
            const actual = createHash('sha256').update(script).digest('hex');
            if (actual !== hook.file.sha256) throw new InputError(`hooks.${hook.name}.file`, `the script checked with the recipe (${hook.file.sha256})`, actual);
            const inside = `/tmp/imgflow-hook-${hook.name}`;
            await withTemporaryFile(dirs, inside, script, 0o755, () => runInRoot(dirs, [inside, ...hook.argv]));
          }
          return { hook: hook.name, layer: hook.layer };
        }),
      );
    },

    /** Preparation; records private directories and sharing in the build's image manifest. */
    async prepare(input: BuildRef & { prepare: PrepareOptions }): Promise<PhaseResult & { emptied: number; truncatedLogs: number; removedIdentity: number; disabledServices: string[]; lockedPasswords: number }> {
      const dirs = buildDirs(config, input);
      const options = checkPrepareInput(input.prepare);
      return runPhaseOnce(dirs, 'prepare', { options, arch: input.arch }, () =>
        timed('prepare', dirs, async () => {
          await takeRoot(dirs);
          const summary = await prepareRoot(dirs.root, options);
          await writeJsonAtomic(path.join(dirs.work, 'image.json'), { private: summary.private, shared: summary.shared, hostname: options.hostname ?? null, network: options.network });
          return {
            emptied: summary.emptied.length,
            truncatedLogs: summary.truncatedLogs,
            removedIdentity: summary.removedIdentity.length,
            disabledServices: summary.disabledServices,
            lockedPasswords: summary.lockedPasswords,
          };
        }),
      );
    },

    /** The prepare rules' breaches in the current tree (read-only). */
    async validate(input: BuildRef & { prepare: PrepareOptions }): Promise<{ ok: boolean; breaches: Breach[] }> {
      const dirs = buildDirs(config, input);
      await requireRoot(dirs);
      const breaches = await validateRoot(dirs.root, checkPrepareInput(input.prepare));
      return { ok: breaches.length === 0, breaches };
    },

    /** Prepares again where validation finds breaches; reports before and after. */
    async fix(input: BuildRef & { prepare: PrepareOptions }): Promise<{ ok: boolean; fixed: number; remaining: Breach[] }> {
      const dirs = buildDirs(config, input);
      await takeRoot(dirs);
      await assertNothingMounted(dirs.root);
      const { before, after } = await fixRoot(dirs.root, checkPrepareInput(input.prepare));
      return { ok: after.length === 0, fixed: before.length - after.length, remaining: after };
    },

    /**
     * Installed packages (written to packages.json), disk usage and a file manifest (path, size,
     * mode, sha256; written to manifest.jsonl), with the private directories and sharing that
     * preparation recorded. Read-only on the tree, so it simply runs again.
     */
    async measure(input: BuildRef): Promise<{
      packages: number;
      packagesFile: string;
      /** Digest of the list's content, and of the file as written (what a copy is checked against). */
      packagesSha256: string;
      packagesFileSha256: string;
      bytes: number;
      manifest: { path: string; entries: number; sha256: string };
      private?: PrivateDir[];
      shared?: boolean;
    }> {
      const dirs = buildDirs(config, input);
      await requireRoot(dirs);
      const list = await installedPackages(dirs.root);
      const packagesFile = path.join(dirs.work, 'packages.json');
      await writeJsonAtomic(packagesFile, list);
      const partial = partialPath(dirs.manifest);
      const manifest = await writeManifest(run, dirs.root, partial);
      await fs.rename(partial, dirs.manifest);
      const { bytes } = await measureRoot(run, dirs.root);
      const image = await readImageRecord(dirs);
      return { packages: list.length, packagesFile, packagesSha256: digestOf(list), packagesFileSha256: await sha256File(packagesFile), bytes, manifest: { path: dirs.manifest, ...manifest }, ...image };
    },

    /** The build's log (every command its phases ran), for the version to keep. */
    async buildLog(input: BuildRef): Promise<{ path: string; sha256: string } | undefined> {
      const file = path.join(buildDirs(config, input).work, BUILD_LOG);
      return (await exists(file)) ? { path: file, sha256: await sha256File(file) } : undefined;
    },

    /** Removes a build's work directory (its outputs are stored by then, or the build failed). */
    async removeBuild(input: BuildRef): Promise<{ removed: boolean }> {
      const dirs = buildDirs(config, input);
      if (!(await exists(dirs.work))) return { removed: false };
      await removeTree(run, dirs.work);
      return { removed: true };
    },

    /** The image's files: ext4 (raw), qcow2 converted from it, and/or squashfs. */
    async packOutputs(input: BuildRef & { image: string; version: string; outputs: OutputFormat[] }): Promise<PhaseResult & { outputs: PackedOutput[] }> {
      const dirs = buildDirs(config, input);
      const image = checkName('image', input.image);
      const version = checkName('version', input.version);
      const formats = checkOutputsInput(input.outputs);
      return runPhaseOnce(dirs, 'pack', { image, version, formats, arch: input.arch }, () =>
        timed('pack', dirs, async () => {
          await takeRoot(dirs);
          await assertNothingMounted(dirs.root);
          await fs.mkdir(dirs.outputs, { recursive: true });
          const base = path.join(dirs.outputs, `${image}-${version}`);
          const outputs: PackedOutput[] = [];
          if (formats.includes('raw') || formats.includes('qcow2')) {
            const raw = await packExt4(run, dirs.root, `${base}.raw`, image);
            if (formats.includes('qcow2')) outputs.push(await packQcow2(run, raw, `${base}.qcow2`));
            if (formats.includes('raw')) outputs.push(await describe('raw', raw));
            else await fs.rm(raw, { force: true });
          }
          if (formats.includes('squashfs')) outputs.push(await packSquashfs(run, dirs.root, `${base}.squashfs`));
          return { outputs };
        }),
      );
    },
  };
}

export interface PackedOutput {
  format: OutputFormat;
  path: string;
  sha256: string;
  bytes: number;
}

/** What preparation recorded about the image (image.json), if it has run. */
async function readImageRecord(dirs: BuildDirs): Promise<{ private?: PrivateDir[]; shared?: boolean }> {
  try {
    const record = JSON.parse(await fs.readFile(path.join(dirs.work, 'image.json'), 'utf8')) as { private: PrivateDir[]; shared: boolean };
    return { private: record.private, shared: record.shared };
  } catch {
    return {};
  }
}

function checkFile(field: string, file: string): string {
  if (!SAFE_FILE.test(file) || file.split('/').includes('..')) throw new InputError(field, 'an absolute path of letters, digits and ._+@-/', file);
  return file;
}

async function describe(format: OutputFormat, file: string): Promise<PackedOutput> {
  return { format, path: file, sha256: await sha256File(file), bytes: (await fs.stat(file)).size };
}

const MIB = 1024 * 1024;

/** Room for the tree plus ext4's own metadata and some headroom, in whole 4 MiB steps. */
export function ext4Size(treeBytes: number): number {
  return Math.ceil((treeBytes * 1.25 + 128 * MIB) / (4 * MIB)) * 4 * MIB;
}

async function packExt4(run: Run, root: string, target: string, label: string): Promise<string> {
  const partial = partialPath(target);
  await fs.rm(partial, { force: true });
  const { bytes } = await measureRoot(run, root);
  const file = await fs.open(partial, 'w');
  await file.truncate(ext4Size(bytes));
  await file.close();
  await run(['mkfs.ext4', '-q', '-F', '-i', '8192', '-L', label.slice(0, 16), '-d', root, partial], { timeoutMs: 30 * MINUTE });
  await fs.rename(partial, target);
  return target;
}

async function packQcow2(run: Run, raw: string, target: string): Promise<PackedOutput> {
  const partial = partialPath(target);
  await run(['qemu-img', 'convert', '-p', '-f', 'raw', '-O', 'qcow2', raw, partial], { timeoutMs: 30 * MINUTE, progress: progress.qemuImg });
  await fs.rename(partial, target);
  return describe('qcow2', target);
}

async function packSquashfs(run: Run, root: string, target: string): Promise<PackedOutput> {
  const partial = partialPath(target);
  await run(['mksquashfs', root, partial, '-noappend', '-no-progress', '-quiet'], { timeoutMs: 30 * MINUTE });
  await fs.rename(partial, target);
  return describe('squashfs', target);
}
