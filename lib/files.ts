/** File helpers shared by activities: digests, atomic placement, existence checks. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { writerGone } from './processes.js';

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
/** `.<name>.partial.<pid>`, perhaps with a suffix of its own after another dot. */
const PARTIAL_NAME = /^\..+\.partial\.(\d+)(?:\.[A-Za-z0-9-]+)?$/;

/**
 * A temporary name beside `target` (same filesystem, so the final rename is atomic), owned by this
 * process: a command orphaned by a worker that was killed keeps writing its own file, never ours.
 */
export function partialPath(target: string): string {
  return path.join(path.dirname(target), `${PARTIAL(target)}${process.pid}`);
}

/** The pid that owns a partial file or tree named by `partialPath`, if `name` is one. */
export function partialOwner(name: string): number | undefined {
  const m = PARTIAL_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Whether `file` (named by `partialPath`) was left by a process that is gone. */
export async function isDeadPartial(file: string): Promise<boolean> {
  const pid = partialOwner(path.basename(file));
  if (pid === undefined) return false;
  const stat = await fs.lstat(file).catch(() => undefined);
  // ctime, which nothing can set back (rsync --times sets mtime): the writer's last change.
  return stat !== undefined && writerGone(pid, stat.ctimeMs);
}

/** Removes partial files of `target` left by processes that are gone (a crashed worker's). */
export async function removeStalePartials(target: string): Promise<void> {
  const prefix = PARTIAL(target);
  const names = await fs.readdir(path.dirname(target)).catch(() => [] as string[]);
  for (const name of names) {
    const file = path.join(path.dirname(target), name);
    if (name.startsWith(prefix) && (await isDeadPartial(file))) await fs.rm(file, { force: true });
  }
}
