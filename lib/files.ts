/** File helpers shared by activities: digests, atomic placement, existence checks. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** A temporary name beside `target`, on the same filesystem so a rename is atomic. */
export function partialPath(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.partial`);
}
