/**
 * A tiny real image: the host's dash as /bin/sh and its sleep, with the libraries they load, so
 * hooks run real programs in it without a debootstrap. Packed as a tarball source.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Run } from '../../activities/runner.js';
import { sha256File } from '../../lib/files.js';

const PROGRAMS: Record<string, string> = { '/bin/sh': '/bin/dash', '/usr/bin/sleep': '/usr/bin/sleep' };

export async function tinyImageTarball(run: Run, dir: string): Promise<{ file: string; sha256: string }> {
  const tree = fs.mkdtempSync(path.join(dir, 'tiny-'));
  const put = (inside: string, from: string) => {
    fs.mkdirSync(path.join(tree, path.dirname(inside)), { recursive: true });
    fs.copyFileSync(from, path.join(tree, inside));
    fs.chmodSync(path.join(tree, inside), fs.statSync(from).mode & 0o777);
  };
  for (const [inside, from] of Object.entries(PROGRAMS)) {
    put(inside, from);
    const { stdout } = await run(['ldd', from]);
    for (const lib of stdout.match(/\/\S+\.so[.\d]*/g) ?? []) put(lib, lib);
  }
  for (const d of ['tmp', 'proc', 'etc', 'var/lib/dpkg']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/os-release'), 'ID=debian\n');
  fs.writeFileSync(
    path.join(tree, 'var/lib/dpkg/status'),
    'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n',
  );
  const file = path.join(dir, `${path.basename(tree)}.tar`);
  await run(['tar', '--numeric-owner', '-C', tree, '-cf', file, '.']);
  return { file, sha256: await sha256File(file) };
}

/** A recipe building `image` from the tiny image's tarball (a real build in seconds, no debootstrap). */
export async function tinyImageRecipe(
  run: Run,
  dir: string,
  image: string,
  o: { arch?: string; outputs?: 'qcow2' | 'raw' } = {},
): Promise<string> {
  const tarball = await tinyImageTarball(run, dir);
  const recipe = path.join(dir, `${image}.yaml`);
  fs.writeFileSync(
    recipe,
    `image: ${image}\narch: ${o.arch ?? 'x86_64'}\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball.file}\n    sha256: ${tarball.sha256}\nprepare:\n  hostname: node\noutputs: [${o.outputs ?? 'qcow2'}]\n`,
  );
  return recipe;
}
