/** Runs the real `imgflow` program from its sources, as a user would run the installed one. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { NAMESPACE } from './temporal.js';

const ENTRY = fileURLToPath(new URL('../../starters/imgflow.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function nodeArgs(args: string[]): string[] {
  return ['--import', 'tsx', ENTRY, ...args];
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `imgflow args...` to completion. */
export function imgflow(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): CliResult {
  const r = spawnSync(process.execPath, nodeArgs(args), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `imgflow args...` in the background, in its own process group. */
export function spawnImgflow(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, nodeArgs(args), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
}

/** Runs `imgflow args...` without blocking this process (its workers keep working meanwhile). */
export function imgflowAsync(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, nodeArgs(args), {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * Starts a real `imgflow worker` of one role, logging JSON lines: against the run's server unless
 * a test's own server is named.
 */
export function spawnWorker(o: {
  home: string;
  role: string;
  host: string;
  env?: NodeJS.ProcessEnv;
  address?: string;
  namespace?: string;
}): ChildProcess {
  const server = ['--address', o.address ?? inject('temporalAddress'), '--namespace', o.namespace ?? NAMESPACE];
  const args = [...server, '--home', o.home, 'worker', '--role', o.role, '--host', o.host, '--metrics', ''];
  return spawnImgflow(args, { IMGFLOW_LOG_PRETTY: '0', ...o.env });
}

/** Collects a process's JSON log lines from stderr (draining the pipe, so it never blocks the process). */
export function logLines(child: ChildProcess): () => Record<string, unknown>[] {
  let text = '';
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return () =>
    text
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** `imgflow` against the run's server with `home` as its state directory, as `user` (the tests' alice unless told). */
export function imgflowAt(home: string, env: NodeJS.ProcessEnv = { IMGFLOW_USER: 'alice' }) {
  return (...args: string[]) =>
    imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home, ...args], env);
}
