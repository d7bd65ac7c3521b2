/**
 * What a worker killed outright leaves in its role's directories: partial files and trees named
 * for its pid (`.<name>.partial.<pid>`, see `partialPath`) and, on a builder, filesystems still
 * mounted in build trees. The next worker on the host removes them before it takes work, after
 * it has ended the dead worker's commands (which may still be writing them). A partial whose
 * writer may still be alive is left alone.
 */
import type { Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Role } from '../common/queues.js';
import { paths, type Config } from '../lib/config.js';
import { isDeadPartial, partialOwner } from '../lib/files.js';
import { mountsUnder, removeTree } from './builder/rootfs.js';
import { cloudPaths } from './cloud/index.js';
import type { Run } from './runner.js';

/** A directory a role writes partials in, how many levels below it they may be, and what never to enter. */
interface Area {
  dir: string;
  depth: number;
  skip?: (dir: string) => boolean;
}

function areas(role: Role, config: Config, arch: string): Area[] {
  const p = paths(config);
  switch (role) {
    case 'builder': {
      // builds/<build>/{markers,outputs}, cache/{bootstrap,tarballs}, <image>/ of base images;
      // never an image root, whose files are the image's own, whatever their names.
      const builds = path.join(p.builder(arch), 'builds');
      return [
        {
          dir: p.builder(arch),
          depth: 3,
          skip: (dir) => path.basename(dir) === 'root' && path.dirname(path.dirname(dir)) === builds,
        },
      ];
    }
    case 'nas':
      // store/<image>/<version>, bases/<image>, volumes, boot/<name>, vm/<name>, pack scratch.
      return [{ dir: p.nas(config.host), depth: 3 }];
    case 'cloud':
    case 'control':
      return [{ dir: cloudPaths(config).converted, depth: 0 }];
    default:
      return [];
  }
}

async function entries(dir: string): Promise<Dirent[]> {
  return fs.readdir(dir, { withFileTypes: true }).catch(() => []);
}

/** Dead partials in `area`: files and trees, which are not entered. */
async function deadPartials(area: Area, dir = area.dir, level = 0): Promise<{ path: string; tree: boolean }[]> {
  const found: { path: string; tree: boolean }[] = [];
  for (const entry of await entries(dir)) {
    const file = path.join(dir, entry.name);
    if (partialOwner(entry.name) !== undefined) {
      if (await isDeadPartial(file)) found.push({ path: file, tree: entry.isDirectory() });
    } else if (entry.isDirectory() && level < area.depth && !area.skip?.(file)) {
      found.push(...(await deadPartials(area, file, level + 1)));
    }
  }
  return found;
}

/**
 * Unmounts what is left mounted in build trees (image code mounts only in namespaces of its own,
 * so a mount the host sees there was left by a killed command) and removes dead workers'
 * partials in `role`'s directories; returns what it removed, for the log.
 */
export async function removeLeftovers(
  role: Role,
  config: Config,
  arch: string,
  run: Run,
): Promise<{ unmounted: string[]; removed: string[] }> {
  const unmounted = role === 'builder' ? await mountsUnder(path.join(paths(config).builder(arch), 'builds')) : [];
  for (const mount of unmounted) await run(['umount', '-l', mount]);
  const removed: string[] = [];
  for (const area of areas(role, config, arch)) {
    for (const partial of await deadPartials(area)) {
      if (partial.tree) await removeTree(run, partial.path);
      else await fs.rm(partial.path, { force: true });
      removed.push(partial.path);
    }
  }
  return { unmounted, removed };
}
