/**
 * Safe handling of an image root on the build host. An image's own symlinks point at its own `/`,
 * so following one from the host could reach the host's files: nothing here follows them.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { exists, partialPath } from '../../lib/files.js';
import type { Run } from '../runner.js';

/** The host path of `inside` (an absolute path in the image), or undefined if a parent is a symlink. */
export async function inRoot(root: string, inside: string): Promise<string | undefined> {
  const parts = path.posix.normalize(inside).split('/').filter(Boolean);
  if (parts.includes('..')) return undefined;
  let current = root;
  for (const part of parts.slice(0, -1)) {
    current = path.join(current, part);
    const stat = await fs.lstat(current).catch(() => undefined);
    if (!stat) return path.join(root, ...parts);
    if (!stat.isDirectory()) return undefined;
  }
  return path.join(root, ...parts);
}

export async function lstatOrUndefined(file: string) {
  return fs.lstat(file).catch(() => undefined);
}

/** Mount points at or below `dir`, deepest first, from the kernel's mount table. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const table = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const base = path.resolve(dir);
  return table
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((mount): mount is string => !!mount)
    .map((mount) => mount.replace(/\\(\d{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((mount) => mount === base || mount.startsWith(base + '/'))
    .sort((a, b) => b.length - a.length);
}

/**
 * Unmounts what an earlier attempt left mounted in a build's tree (the /proc of a chroot whose
 * worker was killed, before builds had namespaces of their own), so a retried phase starts from
 * the tree alone.
 */
export async function releaseMounts(run: Run, dir: string): Promise<void> {
  for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
}

/** Releases a tree's mounts, then removes it without leaving its filesystem. */
export async function removeTree(run: Run, dir: string): Promise<void> {
  if (!path.isAbsolute(dir) || path.resolve(dir) === '/') throw new Error(`refusing to remove ${dir}`);
  await releaseMounts(run, dir);
  await run(['rm', '-rf', '--one-file-system', '--', dir]);
}

/**
 * The argv that runs `argv` inside the image at `root`: in a mount and a PID namespace of its own,
 * chrooted, with a /proc of that namespace mounted in the image. Image code sees only its own
 * processes, so `/proc/<pid>/root` leads back into the image, never to the build host. What it
 * mounts lives only in that namespace, and the whole namespace ends with the command: a killed
 * command leaves nothing mounted on the host.
 */
export function inImageArgv(root: string, argv: readonly string[]): string[] {
  return [
    'unshare',
    '--mount',
    '--propagation=private',
    '--pid',
    '--fork',
    '--kill-child',
    `--root=${root}`,
    '--wd=/',
    '--mount-proc',
    '--',
    ...argv,
  ];
}

/**
 * The image's /proc as an empty directory, where the isolated command mounts its own. A symlink
 * there (debootstrap's first stage leaves `/proc -> /proc`) is replaced, never followed.
 */
export async function ensureProcDir(root: string): Promise<void> {
  const proc = path.join(root, 'proc');
  const stat = await lstatOrUndefined(proc);
  if (stat?.isDirectory()) return;
  if (stat) await fs.rm(proc, { force: true });
  await fs.mkdir(proc, { mode: 0o555 });
}

/** The environment commands get inside a chroot: the image's paths, not the worker's. */
export const CHROOT_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  LC_ALL: 'C.UTF-8',
  DEBIAN_FRONTEND: 'noninteractive',
};

/** Runs image code: isolated from the build host in namespaces of its own (see `inImageArgv`). */
export async function runInRoot(
  run: Run,
  root: string,
  argv: string[],
  extraEnv: Record<string, string> = {},
  timeoutMs = 60 * 60_000,
) {
  await ensureProcDir(root);
  return run(inImageArgv(root, argv), { env: { ...CHROOT_ENV, ...extraEnv }, timeoutMs });
}

/** Fills a fresh partial tree with `fill`, then puts it in place of `root` atomically. */
export async function replaceRoot(run: Run, root: string, fill: (partial: string) => Promise<void>): Promise<void> {
  const partial = partialPath(root);
  if (await exists(partial)) await removeTree(run, partial);
  await fs.mkdir(partial, { recursive: true, mode: 0o755 });
  await fill(partial);
  if (await exists(root)) await removeTree(run, root);
  await fs.rename(partial, root);
}

/**
 * Puts `content` at `inside` for the duration of `fn` and then restores what was there. The
 * image's own entry (possibly a symlink, which must not be followed) is moved aside, not written.
 */
export async function withTemporaryFile<T>(
  root: string,
  inside: string,
  content: string | Buffer,
  mode: number,
  fn: () => Promise<T>,
): Promise<T> {
  const file = await inRoot(root, inside);
  if (!file) throw new Error(`${inside} in ${root} is reached through a symlink; refusing to write there`);
  const aside = `${file}.imgflow-aside`;
  // Present while `file` is ours: a worker killed inside `fn` leaves it, and the retry cleans up.
  const ours = `${file}.imgflow-temporary`;
  await fs.mkdir(path.dirname(file), { recursive: true });
  await restoreAside(file, aside, ours);
  const had = (await lstatOrUndefined(file)) !== undefined;
  if (had) await fs.rename(file, aside);
  try {
    await fs.writeFile(ours, '');
    await fs.writeFile(file, content, { mode, flag: 'wx' });
    return await fn();
  } finally {
    await fs.rm(file, { force: true });
    await fs.rm(ours, { force: true });
    if (had) await fs.rename(aside, file);
  }
}

/** Undoes what a killed attempt of `withTemporaryFile` left: its own file out, the image's back. */
async function restoreAside(file: string, aside: string, ours: string): Promise<void> {
  if (await lstatOrUndefined(ours)) await fs.rm(file, { force: true });
  await fs.rm(ours, { force: true });
  if ((await lstatOrUndefined(aside)) && !(await lstatOrUndefined(file))) await fs.rename(aside, file);
}

/** How trees are archived and unpacked: owners by number, extended attributes and ACLs kept. */
export const TAR_FLAGS = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls'];

/** Unpacks a tree's tarball into `target`. */
export async function extract(run: Run, tarball: string, target: string): Promise<void> {
  await run(['tar', ...TAR_FLAGS, '-xpf', tarball, '-C', target], { timeoutMs: 30 * 60_000 });
}
