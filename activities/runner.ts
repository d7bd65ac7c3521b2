/**
 * The one way imgflow runs a command: argv arrays only, never a shell. Each command runs in its
 * own process group so that cancellation, a timeout or a worker shutdown ends the whole tree; it
 * heartbeats while it runs (with progress where the tool prints it) and is logged with its argv,
 * duration and exit code. A failure carries the tail of stderr.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import { execa } from 'execa';
import type { Logger } from '../lib/logger.js';
import { writerGone } from '../lib/processes.js';

export interface CommandOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Written to the command's stdin. */
  input?: string | Buffer;
  /** Ends the command (and its children) after this long. */
  timeoutMs?: number;
  /** Exit codes that count as success besides 0 (e.g. rsync's 24, "files vanished"). */
  okExitCodes?: number[];
  /** Reads a percentage out of one line of the tool's output, for heartbeats and progress bars. */
  progress?: (line: string) => number | undefined;
  /** Ended with the command when aborted; the activity's cancellation is always honoured too. */
  signal?: AbortSignal;
}

export interface CommandResult {
  argv: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export type Run = (argv: readonly string[], options?: CommandOptions) => Promise<CommandResult>;

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
    reason: string,
  ) {
    super(`${argv.join(' ')}: ${reason}${stderrTail ? `: ${stderrTail}` : ''}`);
  }
}

const STDERR_TAIL = 2000;
export const KILL_GRACE_MS = 5000;
export const HEARTBEAT_MS = 1000;

/** The activity this code runs in, if any (commands heartbeat and honour its cancellation). */
export function currentActivity(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** The end of a command's stderr, where tools say what went wrong. */
export function stderrTail(text: string): string {
  const trimmed = text.trim();
  return trimmed.length > STDERR_TAIL ? `...${trimmed.slice(-STDERR_TAIL)}` : trimmed;
}

/** Sends a signal to a whole process group, ignoring one that is already gone. */
export function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group has exited */
  }
}

/** Reads the percentage from the progress lines of tools that print one. */
export const progress = {
  /** `qemu-img convert -p`: "    (42.00/100%)". */
  qemuImg: (line: string) => {
    const m = /\((\d+(?:\.\d+)?)\/100%\)/.exec(line);
    return m ? Number(m[1]) : undefined;
  },
  /** `rsync --info=progress2`: "  1,234,567  42%  10.00MB/s  0:00:03". */
  rsync: (line: string) => {
    const m = /\s(\d{1,3})%\s/.exec(line);
    return m ? Number(m[1]) : undefined;
  },
};

/**
 * Process groups of running commands, recorded on disk: a worker killed outright cannot end its
 * commands, so the next worker on the host ends them before it takes work (`reapOrphans`).
 */
function recordGroup(dir: string | undefined, pgid: number | undefined, argv: readonly string[]): () => void {
  if (!dir || pgid === undefined) return () => {};
  const file = path.join(dir, `${pgid}.json`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ owner: process.pid, argv }));
  return () => fs.rmSync(file, { force: true });
}

export function checkArgv(argv: readonly string[]): void {
  if (argv.length === 0 || argv.some((a) => typeof a !== 'string' || a.includes('\0'))) {
    throw new CommandError(argv, undefined, '', 'argv must be non-empty strings without NUL');
  }
}

/** Ends the commands of workers that died without ending them; returns their argv. */
export function reapOrphans(dir: string): string[][] {
  const reaped: string[][] = [];
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const file = path.join(dir, name);
    try {
      const { owner, argv } = JSON.parse(fs.readFileSync(file, 'utf8')) as { owner: number; argv: string[] };
      // A pid taken since by a process started after the record was written is not its owner.
      if (!writerGone(owner, fs.statSync(file).ctimeMs)) continue;
      signalGroup(Number.parseInt(name, 10), 'SIGKILL');
      reaped.push(argv);
    } catch {
      /* a record half written by a dying worker: nothing to end */
    }
    fs.rmSync(file, { force: true });
  }
  return reaped;
}

/**
 * Ends the process groups of `pids` (SIGTERM, then SIGKILL after a grace) when the activity is
 * cancelled, the caller's signal aborts or `timeoutMs` passes; `ended()` says why, if it did.
 * The runner and the pipe share it; `release()` once the commands are done.
 */
export function stopOnCancel(
  pids: (number | undefined)[],
  options: { signal?: AbortSignal; timeoutMs?: number },
  activity: Context | undefined,
): { ended(): string | undefined; release(): void } {
  let ended: string | undefined;
  const stop = (why: string) => {
    if (ended) return;
    ended = why;
    for (const pid of pids) signalGroup(pid, 'SIGTERM');
    setTimeout(() => pids.forEach((pid) => signalGroup(pid, 'SIGKILL')), KILL_GRACE_MS).unref();
  };
  const signals = [activity?.cancellationSignal, options.signal].filter((s): s is AbortSignal => !!s);
  const onAbort = () => stop('cancelled');
  for (const s of signals) {
    if (s.aborted) onAbort();
    else s.addEventListener('abort', onAbort, { once: true });
  }
  const timer = options.timeoutMs
    ? setTimeout(() => stop(`timed out after ${options.timeoutMs} ms`), options.timeoutMs)
    : undefined;
  return {
    ended: () => ended,
    release() {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', onAbort);
    },
  };
}

export interface RunnerOptions {
  /** Where running commands' process groups are recorded, for `reapOrphans`. */
  groupsDir?: string;
}

export function createRunner(logger: Logger, runnerOptions: RunnerOptions = {}): Run {
  return async function run(argv, options = {}) {
    checkArgv(argv);
    const activity = currentActivity();
    const started = performance.now();
    const child = execa(argv[0]!, argv.slice(1), {
      cwd: options.cwd,
      env: options.env,
      extendEnv: true,
      input: options.input,
      stdin: options.input === undefined ? 'ignore' : undefined,
      detached: true,
      reject: false,
      stripFinalNewline: false,
      maxBuffer: 256 * 1024 * 1024,
    });

    const forget = recordGroup(runnerOptions.groupsDir, child.pid, argv);
    const stopper = stopOnCancel([child.pid], options, activity);

    let percent: number | undefined;
    if (options.progress) {
      // Tools redraw progress with \r: each line or redraw is offered to the parser on its own.
      const parse = (chunk: Buffer) => {
        for (const line of chunk.toString().split(/[\r\n]+/)) {
          const p = line ? options.progress!(line) : undefined;
          if (p !== undefined) percent = p;
        }
      };
      child.stdout?.on('data', parse);
      child.stderr?.on('data', parse);
    }
    const beat = activity
      ? setInterval(
          () =>
            activity.heartbeat({
              command: argv[0],
              seconds: Math.round((performance.now() - started) / 1000),
              percent,
            }),
          HEARTBEAT_MS,
        )
      : undefined;
    activity?.heartbeat({ command: argv[0], seconds: 0 });

    try {
      const result = await child;
      const ended = stopper.ended();
      const durationMs = Math.round(performance.now() - started);
      const exitCode = result.exitCode ?? -1;
      const stderr = String(result.stderr ?? '');
      logger.info({ argv, durationMs, exitCode, ...(ended ? { ended } : {}) }, 'command');
      const ok = !ended && (exitCode === 0 || options.okExitCodes?.includes(exitCode));
      if (!ok) {
        if (activity?.cancellationSignal.aborted) throw activity.cancellationSignal.reason;
        const reason =
          ended ??
          (result.signal
            ? `killed by ${result.signal}`
            : result.exitCode === undefined
              ? (result.shortMessage ?? 'did not start')
              : `exit code ${exitCode}`);
        throw new CommandError(argv, result.exitCode, stderrTail(stderr), reason);
      }
      return { argv, exitCode, stdout: String(result.stdout ?? ''), stderr, durationMs };
    } finally {
      forget();
      stopper.release();
      clearInterval(beat);
    }
  };
}
