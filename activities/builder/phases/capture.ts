/**
 * The capture phase: a host's root filesystem over rsync (ssh for a remote host), with bounded
 * attempts. The builder's own root only when the recipe allows it, and then without imgflow's state.
 */
import fs from 'node:fs/promises';
import { InputError } from '../../../common/names.js';
import { shortHostName, type Config } from '../../../lib/config.js';
import { CommandError, progress, type Run } from '../../runner.js';
import type { ActivityDeps } from '../../shared/index.js';
import { buildDirs, loggingRunner, MINUTE, runPhase, type BuildRef, type PhaseResult } from '../phase.js';
import { builderRootRefusal, checkSourceInput, isLoopbackHost, type CaptureSource } from '../recipe.js';

/** How this worker reaches hosts it captures: its key and the host keys it trusts. */
export interface SshOptions {
  identityFile?: string;
  knownHostsFile?: string;
}

/** Default exclusions of a capture: the contents of the running system's virtual directories. */
export const CAPTURE_EXCLUDES = ['/proc/*', '/sys/*', '/dev/*', '/run/*', '/tmp/*'];

/** rsync exit codes worth another attempt: connection and transport failures, timeouts. */
const RSYNC_TRANSIENT = [10, 12, 30, 35, 255];
const SAFE_FILE = /^\/[A-Za-z0-9._+@\/-]*$/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function checkFile(field: string, file: string): string {
  if (!SAFE_FILE.test(file) || file.split('/').includes('..'))
    throw new InputError(field, 'an absolute path of letters, digits and ._+@-/', file);
  return file;
}

/** The `-e` value rsync splits into ssh's argv itself (no shell): every part is checked first. */
function sshCommand(ssh: SshOptions, source: CaptureSource, connectTimeoutSeconds: number): string {
  const parts = [
    'ssh',
    '-o',
    'BatchMode=yes',
    '-o',
    `ConnectTimeout=${connectTimeoutSeconds}`,
    '-o',
    'ServerAliveInterval=15',
    '-o',
    'ServerAliveCountMax=4',
  ];
  if (source.port) parts.push('-p', String(source.port));
  if (ssh.identityFile) parts.push('-i', checkFile('ssh.identityFile', ssh.identityFile), '-o', 'IdentitiesOnly=yes');
  if (ssh.knownHostsFile)
    parts.push(
      '-o',
      `UserKnownHostsFile=${checkFile('ssh.knownHostsFile', ssh.knownHostsFile)}`,
      '-o',
      'StrictHostKeyChecking=yes',
    );
  return parts.join(' ');
}

async function rsyncWithRetries(
  run: Run,
  argv: string[],
  source: CaptureSource,
  attempts: number,
  timeoutMs: number,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run(argv, { okExitCodes: [24], timeoutMs, progress: progress.rsync });
      return;
    } catch (error) {
      const transient =
        error instanceof CommandError && (error.exitCode === undefined || RSYNC_TRANSIENT.includes(error.exitCode));
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
async function isBuilderRoot(config: Config, source: CaptureSource): Promise<boolean> {
  if (source.host && !isLoopbackHost(source.host) && source.host !== config.host && source.host !== shortHostName())
    return false;
  const [target, root] = await Promise.all([fs.stat(source.path).catch(() => undefined), fs.stat('/')]);
  return target !== undefined && target.dev === root.dev && target.ino === root.ino;
}

export function createCaptureActivities({ run: runCommand, config, ssh = {} }: ActivityDeps & { ssh?: SshOptions }) {
  const run = loggingRunner(runCommand);
  return {
    /**
     * A host's root filesystem over rsync (ssh for a remote host), with bounded attempts. The
     * builder's own root only when the recipe allows it, and then without imgflow's state.
     */
    async capture(
      input: BuildRef & {
        source: CaptureSource;
        attempts?: number;
        connectTimeoutSeconds?: number;
        timeoutMinutes?: number;
      },
    ): Promise<PhaseResult & { from: string; builderRoot?: true }> {
      const dirs = buildDirs(config, input);
      const source = checkSourceInput('capture', input.source);
      const builderRoot = await isBuilderRoot(config, source);
      if (builderRoot && !source.allowBuilderRoot)
        throw builderRootRefusal(source.host ? `${source.host}:${source.path}` : source.path, 'resolves to');
      const attempts = Math.min(Math.max(input.attempts ?? 3, 1), 10);
      const connectTimeout = Math.min(Math.max(input.connectTimeoutSeconds ?? 10, 1), 120);
      const from = source.host ? `${source.user ?? 'root'}@${source.host}:${source.path}` : source.path;
      return runPhase(
        run,
        dirs,
        'capture',
        { source, arch: input.arch },
        async () => {
          await fs.mkdir(dirs.root, { recursive: true, mode: 0o755 });
          const excludes = [...CAPTURE_EXCLUDES, ...(builderRoot ? [config.home] : []), ...source.excludes].map(
            (pattern) => `--exclude=${pattern}`,
          );
          const transport = source.host ? ['-e', sshCommand(ssh, source, connectTimeout)] : [];
          // Copying into the root itself lets a later attempt continue where a failed one stopped.
          const argv = [
            'rsync',
            '-aHAX',
            '--numeric-ids',
            '--delete',
            '--timeout=120',
            '--info=progress2',
            ...excludes,
            ...transport,
            '--',
            `${from.replace(/\/+$/, '')}/`,
            `${dirs.root}/`,
          ];
          await rsyncWithRetries(run, argv, source, attempts, (input.timeoutMinutes ?? 120) * MINUTE);
          return { from, ...(builderRoot ? { builderRoot: true as const } : {}) };
        },
        { replacesRoot: true },
      );
    },
  };
}
