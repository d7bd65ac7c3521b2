/**
 * Safe handling of an image root on the build host. An image's own symlinks point at its own `/`,
 * so following one from the host could reach the host's files: nothing here follows them.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
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
  return ['unshare', '--mount', '--propagation=private', '--pid', '--fork', '--kill-child', `--root=${root}`, '--wd=/', '--mount-proc', '--', ...argv];
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
