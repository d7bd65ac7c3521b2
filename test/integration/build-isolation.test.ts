/**
 * Image code runs isolated from the build host: a hook in its own mount and PID namespace sees
 * only the image's processes, cannot reach the host through /proc/<pid>/root, mounts nothing the
 * host sees, and still decides the phase's outcome by its exit code. A capture of the builder's
 * own root is refused unless the recipe allows it.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import type { CaptureSource, Hook } from '../../activities/builder/recipe.js';
import { mountsUnder } from '../../activities/builder/rootfs.js';
import { createRunner } from '../../activities/runner.js';
import { InputError } from '../../common/names.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { tempDir } from '../support/dirs.js';
import { tinyImageTarball } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import { processesRootedIn } from '../support/processes.js';
import { requireTools } from '../support/tools.js';
import { until } from '../support/wait.js';

/** Tries each way back to the host that /proc offers, lists the processes it sees, then exits as told. */
const ESCAPE_HOOK = `#!/bin/sh
name=$1 host_pid=$2
for pid in 1 $PPID $host_pid; do
  echo "$pid" > "/proc/$pid/root/tmp/$name-$pid" || :
done
/bin/sh -c 'echo child > "/proc/$PPID/root/tmp/$0-child"' "$name" || :
for p in /proc/[0-9]*; do echo "\${p#/proc/}"; done > "/tmp/$name-pids"
exit "$3"
`;

describe('builds are isolated from the build host', () => {
  requireTools('unshare', 'tar', 'ldd');
  const dir = tempDir();
  // Registered after tempDir, so it runs first: nothing may stay mounted in the tree it removes.
  afterAll(async () => {
    for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
  });
  const config = loadConfig({ home: path.join(dir, 'home'), host: 'testhost' }, {});
  const run = createRunner(memoryLogger().logger);
  const builder = createBuilderActivities({ run, config });
  const rootOf = (build: string) => path.join(config.home, 'builder/x86_64/builds', build, 'root');
  let tarball: { file: string; sha256: string };

  beforeAll(async () => {
    tarball = await tinyImageTarball(run, dir);
  });

  async function unpacked(build: string) {
    const ref = { build, arch: 'x86_64' };
    await builder.unpackTarball({ ...ref, source: { kind: 'tarball', path: tarball.file, sha256: tarball.sha256 } });
    return ref;
  }

  async function escapeHook(args: string[]): Promise<Hook> {
    const script = path.join(dir, 'escape.sh');
    fs.writeFileSync(script, ESCAPE_HOOK);
    return { name: 'escape', layer: 'image', argv: args, file: { path: script, sha256: await sha256File(script) } };
  }

  it('a hook writing through /proc/<pid>/root reaches only the image, sees only its own processes, and its exit decides', async () => {
    const ref = await unpacked('escape');
    const name = `imgflow-escape-${randomUUID().slice(0, 8)}`;
    const hostMarkers = () => fs.readdirSync('/tmp').filter((n) => n.startsWith(name));

    const result = await builder.runHook({ ...ref, hook: await escapeHook([name, String(process.pid), '0']) });
    expect(result).toMatchObject({ phase: 'hook-escape', hook: 'escape', resumed: false });
    expect(hostMarkers()).toEqual([]);
    // The writes landed, in the image: its pid 1 is the hook, rooted in the image.
    const inImage = fs.readdirSync(path.join(rootOf('escape'), 'tmp')).filter((n) => n.startsWith(name));
    expect(inImage).toEqual(expect.arrayContaining([`${name}-1`, `${name}-child`, `${name}-pids`]));
    const pids = fs
      .readFileSync(path.join(rootOf('escape'), 'tmp', `${name}-pids`), 'utf8')
      .trim()
      .split('\n')
      .map(Number);
    expect(pids).toContain(1);
    expect(pids.length).toBeLessThanOrEqual(3);
    expect(pids).not.toContain(process.pid);
    expect(await mountsUnder(config.home)).toEqual([]);

    const failing = await unpacked('escape-fails');
    await expect(
      builder.runHook({ ...failing, hook: await escapeHook([name, String(process.pid), '3']) }),
    ).rejects.toThrow(/exit code 3/);
    expect(hostMarkers()).toEqual([]);
  });

  it('a hook killed mid-run leaves nothing mounted on the host and no process behind', async () => {
    const ref = await unpacked('killed');
    const root = rootOf('killed');
    const running = builder.runHook({
      ...ref,
      hook: { name: 'sleeper', layer: 'image', argv: ['/usr/bin/sleep', '600'] },
    });
    const hook = await until('the hook to run in the image', () => processesRootedIn(root).at(0));
    // Its /proc is mounted in its own namespace only.
    expect(fs.readFileSync(`/proc/${hook}/mountinfo`, 'utf8')).toMatch(/ \/proc rw,nosuid,nodev,noexec/);
    expect(await mountsUnder(config.home)).toEqual([]);
    const unshare = Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${hook}/status`, 'utf8'))![1]);
    process.kill(-unshare, 'SIGKILL');
    await expect(running).rejects.toThrow(/killed by SIGKILL/);
    await until('the image to have no process left', () => processesRootedIn(root).length === 0);
    expect(await mountsUnder(config.home)).toEqual([]);
  });

  it('refuses to capture the builder itself, through a symlink or a bind mount too, unless allowed', async () => {
    requireTools('rsync');
    const link = path.join(dir, 'host-root');
    fs.symlinkSync('/', link);
    const source = (from: string, allowBuilderRoot?: true): CaptureSource => ({
      kind: 'capture',
      path: from,
      excludes: [],
      ...(allowBuilderRoot ? { allowBuilderRoot } : {}),
    });
    for (const from of [link, `${link}/.`]) {
      const error = await builder
        .capture({ build: 'self', arch: 'x86_64', source: source(from) })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InputError);
      expect((error as Error).message).toBe(
        `source.capture.allowBuilderRoot: expected true to capture the builder host itself (source.capture.from ${JSON.stringify(from)} resolves to its root filesystem)`,
      );
    }
    const bound = path.join(dir, 'bound-root');
    fs.mkdirSync(bound);
    await run(['mount', '--bind', '/', bound]);
    try {
      await expect(builder.capture({ build: 'self', arch: 'x86_64', source: source(bound) })).rejects.toThrow(
        /^source\.capture\.allowBuilderRoot: expected true/,
      );
    } finally {
      await run(['umount', bound]);
    }
    expect(fs.existsSync(rootOf('self'))).toBe(false);

    // Allowed: the capture says so, and leaves imgflow's own state out. Only /etc/host* is taken here.
    const { logger, lines } = memoryLogger();
    const allowed = createBuilderActivities({ run: createRunner(logger), config });
    const only = ['/[!e]*', '/e[!t]*', '/etc/[!h]*', '/etc/h[!o]*', '/etc/ho[!s]*'];
    const captured = await allowed.capture({
      build: 'self',
      arch: 'x86_64',
      source: { ...source(link, true), excludes: only },
    });
    expect(captured).toMatchObject({ phase: 'capture', from: link, builderRoot: true, resumed: false });
    expect(fs.readFileSync(path.join(rootOf('self'), 'etc/hostname'), 'utf8')).toBe(
      fs.readFileSync('/etc/hostname', 'utf8'),
    );
    expect(fs.readdirSync(rootOf('self'))).toEqual(['etc']);
    const argv = lines.find((l) => l.msg === 'command' && (l.argv as string[])[0] === 'rsync')!.argv as string[];
    expect(argv).toContain(`--exclude=${config.home}`);
  });
});
