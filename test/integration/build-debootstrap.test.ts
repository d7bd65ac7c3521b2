/**
 * A real image build: debootstrap --variant=minbase bookworm from the machine's Debian mirror,
 * then packages, hooks, preparation, measurement and a qcow2, phase by phase as a workflow calls
 * them; then a second build that reuses the cached bootstrap.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { toReportRow, type PhaseResult } from '../../activities/builder/phase.js';
import { BOOTSTRAP_REUSED } from '../../activities/builder/phases/bootstrap.js';
import { readRecipe, type DebootstrapSource } from '../../activities/builder/recipe.js';
import { formatReport } from '../../activities/builder/report.js';
import { mountsUnder } from '../../activities/builder/rootfs.js';
import { createRunner } from '../../activities/runner.js';
import { loadConfig } from '../../lib/config.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'recipes');
const BUILD_TIMEOUT = 15 * 60_000;

describe('debootstrap build, end to end', () => {
  requireTools('debootstrap', 'chroot', 'unshare', 'tar', 'du', 'mount', 'umount', 'mkfs.ext4', 'qemu-img', 'debugfs');
  const dir = tempDir('imgflow-build-');
  // Registered after tempDir, so it runs before the tree is deleted: nothing may stay mounted in it.
  afterAll(async () => {
    const run = createRunner(memoryLogger().logger);
    for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
  });

  const config = loadConfig({ home: path.join(dir, 'home'), host: 'testhost' }, {});
  const run = createRunner(memoryLogger().logger);
  const builder = createBuilderActivities({ run, config });
  const recipe = readRecipe(path.join(FIXTURES, 'minbase.yaml'));
  const source = recipe.source as DebootstrapSource;
  const rootOf = (build: string) => path.join(config.home, 'builder', recipe.arch, 'builds', build, 'root');
  const timings: Record<string, number> = {};
  let firstBootstrapPackages = 0;

  /** Installed packages as dpkg itself reports them inside the image. */
  async function dpkgInstalledCount(root: string): Promise<number> {
    const { stdout } = await run(['chroot', root, 'dpkg-query', '-W', '-f', '${db:Status-Status}\\n']);
    return stdout.split('\n').filter((status) => status === 'installed').length;
  }

  it(
    'bootstraps, installs, runs hooks, prepares, measures and packs a qcow2',
    async () => {
      const ref = { build: 'first', arch: recipe.arch };
      const rows: PhaseResult[] = [];

      const bootstrap = await builder.bootstrap({ ...ref, source });
      rows.push(bootstrap);
      timings.freshBootstrapMs = bootstrap.durationMs;
      expect(bootstrap).toMatchObject({ phase: 'bootstrap', cacheHit: false, resumed: false });
      expect(bootstrap.note).toBeUndefined();
      expect(bootstrap.packages).toBeGreaterThan(50);
      firstBootstrapPackages = bootstrap.packages;

      // A retry after a crash finds the marker and does not bootstrap again.
      const retried = await builder.bootstrap({ ...ref, source });
      expect(retried).toMatchObject({ resumed: true, cacheHit: false, packages: bootstrap.packages });

      const packages = await builder.installPackages({ ...ref, packages: recipe.packages });
      rows.push(packages);
      expect(packages.packages).toBeGreaterThan(bootstrap.packages);

      for (const hook of recipe.hooks) rows.push(await builder.runHook({ ...ref, hook }));
      expect(fs.readFileSync(path.join(rootOf('first'), 'etc/motd'), 'utf8')).toBe('imgflow test site\n');
      expect(fs.existsSync(path.join(rootOf('first'), 'etc/imgflow-built'))).toBe(true);

      const before = await builder.validate({ ...ref, prepare: recipe.prepare });
      expect(before.ok).toBe(false);
      expect(before.breaches.map((b) => b.rule)).toContain('hostname');

      const prepared = await builder.prepare({ ...ref, prepare: recipe.prepare });
      rows.push(prepared);
      expect(await builder.validate({ ...ref, prepare: recipe.prepare })).toEqual({ ok: true, breaches: [] });
      const image = JSON.parse(fs.readFileSync(path.join(path.dirname(rootOf('first')), 'image.json'), 'utf8')) as {
        private: unknown;
        shared: boolean;
      };
      expect(image).toMatchObject({ private: [{ dir: '/var/lib/private', exclude: ['*.tmp'] }], shared: true });

      const measured = await builder.measure(ref);
      expect(measured.packages).toBe(await dpkgInstalledCount(rootOf('first')));
      expect(measured.packages).toBe(prepared.packages);
      expect(measured.manifest.entries).toBeGreaterThan(1000);
      const firstLine = JSON.parse(fs.readFileSync(measured.manifest.path, 'utf8').split('\n')[0]!) as Record<
        string,
        unknown
      >;
      expect(firstLine).toMatchObject({ path: '/bin', type: 'link', mode: expect.stringMatching(/^\d{4}$/) });
      const passwd = fs
        .readFileSync(measured.manifest.path, 'utf8')
        .split('\n')
        .find((l) => l.includes('"/etc/passwd"'));
      expect(JSON.parse(passwd!)).toMatchObject({
        type: 'file',
        mode: '0644',
        sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      });

      const packed = await builder.packOutputs({ ...ref, image: recipe.image, version: '1', outputs: recipe.outputs });
      rows.push(packed);
      expect(packed.outputs).toHaveLength(1);
      const qcow2 = packed.outputs[0]!;
      expect(qcow2).toMatchObject({ format: 'qcow2', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
      const info = JSON.parse((await run(['qemu-img', 'info', '--output=json', qcow2.path])).stdout) as {
        format: string;
      };
      expect(info.format).toBe('qcow2');
      // The filesystem inside holds the prepared tree.
      const raw = path.join(dir, 'check.raw');
      await run(['qemu-img', 'convert', '-O', 'raw', qcow2.path, raw]);
      expect((await run(['debugfs', '-R', 'cat /etc/hostname', raw])).stdout).toBe('node\n');
      fs.rmSync(raw);

      const report = formatReport(rows.map(toReportRow));
      console.log(`first build:\n${report}`);
      const total = report.split('\n').at(-1)!;
      expect(total).toMatch(
        new RegExp(`^TOTAL\\s+\\S+\\s+\\+${measured.packages}\\s+\\S+ \\S+\\s+${measured.packages}\\s`),
      );
      expect(report.split('\n').map((l) => l.split(/\s+/)[0])).toEqual([
        'PHASE',
        'bootstrap',
        'packages',
        'hook-site-motd',
        'hook-image-marker',
        'prepare',
        'pack',
        'TOTAL',
      ]);
    },
    BUILD_TIMEOUT,
  );

  it(
    'a second build with the same bootstrap inputs reuses the cached tree and says so',
    async () => {
      const ref = { build: 'second', arch: recipe.arch };
      const bootstrap = await builder.bootstrap({ ...ref, source });
      timings.cachedBootstrapMs = bootstrap.durationMs;
      expect(bootstrap).toMatchObject({
        cacheHit: true,
        note: BOOTSTRAP_REUSED,
        packages: firstBootstrapPackages,
        resumed: false,
      });
      expect(await dpkgInstalledCount(rootOf('second'))).toBe(firstBootstrapPackages);

      const prepared = await builder.prepare({ ...ref, prepare: recipe.prepare });
      const packed = await builder.packOutputs({ ...ref, image: recipe.image, version: '2', outputs: ['qcow2'] });
      const report = formatReport([bootstrap, prepared, packed].map(toReportRow));
      console.log(`second build:\n${report}`);
      expect(report.split('\n')[1]).toMatch(/^bootstrap\s.*bootstrap reused: same suite, variant, mirror, packages$/);
      console.log(`bootstrap: fresh ${timings.freshBootstrapMs} ms, from cache ${timings.cachedBootstrapMs} ms`);
      expect(bootstrap.durationMs).toBeLessThan(timings.freshBootstrapMs!);
    },
    BUILD_TIMEOUT,
  );
});
