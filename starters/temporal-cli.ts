/**
 * The Temporal CLI imgflow runs its dev server with: found on the machine, or the pinned version
 * built with Go into the per-user cache once. No Temporal SDK here: `imgflow --help` names the
 * version without loading one.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findOnPath } from '../lib/which.js';

export const TEMPORAL_CLI_VERSION = 'v1.5.1';
const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';

function cacheDir(): string {
  return path.join(
    process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'),
    'imgflow',
    `temporal-${TEMPORAL_CLI_VERSION}`,
  );
}

/** The Temporal CLI to use: $TEMPORAL_CLI, then `temporal` on PATH, then the per-user cache. */
export function findTemporalCli(): string | undefined {
  if (process.env.TEMPORAL_CLI) return process.env.TEMPORAL_CLI;
  const cached = path.join(cacheDir(), 'temporal');
  return findOnPath('temporal') ?? (fs.existsSync(cached) ? cached : undefined);
}

/** Finds the Temporal CLI, building the pinned version with Go into the cache the first time. */
export function ensureTemporalCli(say: (line: string) => void = () => {}): string {
  const found = findTemporalCli();
  if (found) return found;
  const go = findOnPath('go') ?? (fs.existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!go) {
    throw new Error(
      `no Temporal CLI: set TEMPORAL_CLI to its path, put 'temporal' on PATH, or install Go so imgflow can run 'go install ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}'`,
    );
  }
  say(`building the Temporal CLI ${TEMPORAL_CLI_VERSION} into ${cacheDir()} (once; a few minutes)`);
  fs.mkdirSync(cacheDir(), { recursive: true });
  const built = spawnSync(go, ['install', `${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`], {
    env: { ...process.env, GOBIN: cacheDir() },
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (built.status !== 0)
    throw new Error(`go install of the Temporal CLI failed: ${built.stderr.trim().split('\n').slice(-1)[0]}`);
  return path.join(cacheDir(), 'temporal');
}
