import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../common/names.js';
import { createBuilderActivities } from '../../activities/builder/index.js';
import type { TarballSource } from '../../activities/builder/recipe.js';
import { createRunner } from '../../activities/runner.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

function write(root: string, inside: string, content: string): void {
  const file = path.join(root, inside);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

describe('tarball source and raw/squashfs outputs', () => {
  requireTools('tar', 'mkfs.ext4', 'debugfs', 'mksquashfs', 'unsquashfs', 'mount', 'umount', 'unshare');
  const dir = tempDir();
  const config = loadConfig({ home: path.join(dir, 'home'), host: 'testhost' }, {});
  const run = createRunner(memoryLogger().logger);
  const builder = createBuilderActivities({ run, config });

  async function makeTarball(): Promise<{ file: string; sha256: string }> {
    const tree = path.join(dir, 'tree');
    write(tree, 'etc/hostname', 'tarred\n');
    write(tree, 'etc/os-release', 'ID=debian\n');
    write(
      tree,
      'var/lib/dpkg/status',
      'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n',
    );
    write(tree, 'tmp/leftover', 'x\n');
    const file = path.join(dir, 'rootfs.tar.gz');
    await run(['tar', '--numeric-owner', '-C', tree, '-czf', file, '.']);
    return { file, sha256: await sha256File(file) };
  }

  it('refuses a tarball whose sha256 differs from the recipe, before unpacking anything', async () => {
    const { file, sha256 } = await makeTarball();
    const wrong = `${sha256.slice(0, -1)}${sha256.endsWith('0') ? '1' : '0'}`;
    const source: TarballSource = { kind: 'tarball', path: file, sha256: wrong };
    const error = await builder.unpackTarball({ build: 'wrong', arch: 'x86_64', source }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InputError);
    expect((error as Error).message).toBe(
      `source.tarball.sha256: expected the digest of ${file} (${sha256}), got "${wrong}"`,
    );
    expect(fs.existsSync(path.join(config.home, 'builder/x86_64/builds/wrong/root'))).toBe(false);
  });

  it('unpacks a checked tarball and packs raw ext4 and squashfs', async () => {
    const { file, sha256 } = await makeTarball();
    const ref = { build: 'good', arch: 'x86_64' };
    const unpacked = await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: file, sha256 } });
    expect(unpacked).toMatchObject({ phase: 'tarball', sha256, packages: 1, resumed: false });
    const root = path.join(config.home, 'builder/x86_64/builds/good/root');
    expect(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8')).toBe('tarred\n');

    await builder.prepare({
      ...ref,
      prepare: { network: 'remove', removeServices: [], private: [], shared: false, allowPasswordHashes: false },
    });
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);

    const packed = await builder.packOutputs({ ...ref, image: 'tarred', version: '1', outputs: ['raw', 'squashfs'] });
    expect(packed.outputs.map((o) => o.format)).toEqual(['raw', 'squashfs']);
    const [raw, squashfs] = packed.outputs;
    expect((await run(['debugfs', '-R', 'cat /etc/hostname', raw!.path])).stdout).toBe('tarred\n');
    expect((await run(['unsquashfs', '-cat', squashfs!.path, 'etc/hostname'])).stdout).toBe('tarred\n');
    expect(squashfs!.sha256).toBe(await sha256File(squashfs!.path));
  });

  it("a new root clears the later phases' markers; unchanged inputs resume", async () => {
    const { file, sha256 } = await makeTarball();
    const ref = { build: 'markers', arch: 'x86_64' };
    const prepare = {
      network: 'keep' as const,
      removeServices: [],
      private: [],
      shared: false,
      allowPasswordHashes: false,
    };
    await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: file, sha256 } });
    expect((await builder.prepare({ ...ref, prepare })).resumed).toBe(false);
    expect((await builder.prepare({ ...ref, prepare })).resumed).toBe(true);
    expect((await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: file, sha256 } })).resumed).toBe(
      true,
    );

    const other = path.join(dir, 'other.tar');
    await run(['tar', '--numeric-owner', '-C', path.join(dir, 'tree'), '-cf', other, './etc']);
    await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: other, sha256: await sha256File(other) } });
    expect((await builder.prepare({ ...ref, prepare })).resumed).toBe(false);
  });

  it('after a worker died mid-chroot, the retried phase releases the /proc it left mounted', async () => {
    const { file, sha256 } = await makeTarball();
    const ref = { build: 'crashed', arch: 'x86_64' };
    const prepare = {
      network: 'remove' as const,
      removeServices: [],
      private: [],
      shared: false,
      allowPasswordHashes: false,
    };
    await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: file, sha256 } });
    const proc = path.join(config.home, 'builder/x86_64/builds/crashed/root/proc');
    fs.mkdirSync(proc, { recursive: true });
    await run(['mount', '-t', 'proc', 'proc', proc]);
    expect((await builder.prepare({ ...ref, prepare })).resumed).toBe(false);
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(proc);
    expect(await builder.validate({ ...ref, prepare })).toEqual({ ok: true, breaches: [] });
  });

  it('refuses a hook script changed since the recipe was read, and never writes through an image symlink', async () => {
    const { file, sha256 } = await makeTarball();
    const ref = { build: 'hooks', arch: 'x86_64' };
    await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: file, sha256 } });
    const script = path.join(dir, 'hook.sh');
    fs.writeFileSync(script, '#!/bin/sh\ntrue\n');
    const hook = {
      name: 'h',
      layer: 'image' as const,
      argv: [],
      file: { path: script, sha256: await sha256File(script) },
    };
    fs.appendFileSync(script, 'echo changed\n');
    await expect(builder.runHook({ ...ref, hook })).rejects.toThrow(
      /^hooks\.h\.file: expected the script checked with the recipe/,
    );

    const hostDir = fs.mkdtempSync(path.join(dir, 'host-'));
    const root = path.join(config.home, 'builder/x86_64/builds/hooks/root');
    fs.rmSync(path.join(root, 'tmp'), { recursive: true });
    fs.symlinkSync(hostDir, path.join(root, 'tmp'));
    await expect(
      builder.runHook({ ...ref, hook: { ...hook, file: { path: script, sha256: await sha256File(script) } } }),
    ).rejects.toThrow(/reached through a symlink/);
    expect(fs.readdirSync(hostDir)).toEqual([]);
  });
});
