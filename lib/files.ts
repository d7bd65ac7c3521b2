/** File helpers shared by activities: digests, atomic placement, existence checks. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { processRunning } from './processes.js';

/** The hex digest of a file's bytes. */
export async function hashFile(file: string, algorithm: 'sha256' | 'sha512'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function sha256File(file: string): Promise<string> {
  return hashFile(file, 'sha256');
}

export async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

const PARTIAL = (target: string) => `.${path.basename(target)}.partial.`;

/**
 * A temporary name beside `target` (same filesystem, so the final rename is atomic), owned by this
 * process: a command orphaned by a worker that was killed keeps writing its own file, never ours.
 */
export function partialPath(target: string): string {
  return path.join(path.dirname(target), `${PARTIAL(target)}${process.pid}`);
}


/** Removes partial files of `target` left by processes that are gone (a crashed worker's). */
export async function removeStalePartials(target: string): Promise<void> {
  const prefix = PARTIAL(target);
  const names = await fs.readdir(path.dirname(target)).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(name.slice(prefix.length));
    if (name.startsWith(prefix) && pid !== process.pid && !processRunning(pid)) await fs.rm(path.join(path.dirname(target), name), { force: true });
  }
}
