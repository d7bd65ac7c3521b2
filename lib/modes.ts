/**
 * Who may read imgflow's files. Volumes, stored versions, packs, catalog disks, the dev server's
 * database and the state directory itself hold other people's data and secrets: by default only
 * their owner reads them (directories 0700, files 0600, finished read-only files 0400). A site
 * that serves part of them to others (a boot server reading packs) widens every one of them with
 * IMGFLOW_HOME_MODE, the directories' mode (octal, e.g. 0750): files get the same bits without
 * execute.
 */
import fs from 'node:fs/promises';
import { InputError } from '../common/names.js';

export interface FileModes {
  /** Directories. */
  dir: number;
  /** Files that are written to (volumes, records, databases). */
  file: number;
  /** Files that never change once placed (stored versions, bases, packed files). */
  readOnly: number;
  /** The umask that gives a spawned program's files these modes. */
  umask: number;
}

export function homeModes(env: NodeJS.ProcessEnv = process.env): FileModes {
  const raw = env.IMGFLOW_HOME_MODE;
  if (raw !== undefined && !/^0?[0-7]{3}$/.test(raw))
    throw new InputError('IMGFLOW_HOME_MODE', 'an octal mode such as 0700 or 0750', raw);
  const dir = raw === undefined ? 0o700 : parseInt(raw, 8);
  const file = dir & 0o666;
  return { dir, file, readOnly: file & 0o444, umask: 0o777 & ~dir };
}

/** Makes `dir` (and its missing parents) and gives `dir` itself the directories' mode. */
export async function privateDir(dir: string, modes: FileModes): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: modes.dir });
  await fs.chmod(dir, modes.dir);
}
