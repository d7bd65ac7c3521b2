/** Runs the real `imgflow` program from its sources, as a user would run the installed one. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
  const r = spawnSync(process.execPath, nodeArgs(args), { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `imgflow args...` in the background, in its own process group. */
export function spawnImgflow(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, nodeArgs(args), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
}
