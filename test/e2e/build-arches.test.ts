/**
 * A build for each architecture, for real: `imgflow build` of a minbase Debian recipe for x86_64,
 * i686 and aarch64, each taken from `builder.<arch>` by a builder worker of that arch on this
 * x86_64 machine (i686 natively where the kernel runs i386 binaries, else like aarch64 through qemu-user-static and binfmt_misc). The stored
 * image's /bin/sh is read for its architecture, and the version records how it was built. A
 * recipe for an arch no builder serves fails within its bound.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { resolveInRoot, treeArch } from '../../activities/builder/arch.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { Arch } from '../../common/arch.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { createWorker } from '../../workers/worker.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const BUILD_TIMEOUT = 30 * 60_000;

/** What `file` says of each architecture's binaries: a second opinion on the ELF header. */
const FILE_SAYS: Record<string, RegExp> = {
  x86_64: /ELF 64-bit LSB .*x86-64/,
  i686: /ELF 32-bit LSB .*Intel 80386/,
  aarch64: /ELF 64-bit LSB .*ARM aarch64/,
};

/**
 * Whether i386 binaries run emulated here: a kernel without IA32 emulation needs a binfmt_misc
 * handler for them, which the i686 builder registers (read from the kernel, not from imgflow).
 */
const i386Emulated = () =>
  fs.existsSync('/proc/sys/fs/binfmt_misc/qemu-i386') &&
  fs.readFileSync('/proc/sys/fs/binfmt_misc/qemu-i386', 'utf8').startsWith('enabled');

describe('builds for every architecture', () => {
  // Missing emulation fails here, loudly: the aarch64 build needs qemu-user-static.
  requireTools(
    'debootstrap',
    'unshare',
    'mkfs.ext4',
    'qemu-img',
    'rsync',
    'mount',
    'umount',
    'file',
    'qemu-aarch64-static',
  );
  const dir = tempDir('imgflow-arches-');
  const host = uniqueQueue('nas');
  const config = loadConfig(
    {
      home: path.join(dir, 'home'),
      host,
      namespace: NAMESPACE,
      codecKeys: inject('codecKeysPath'),
      metricsAddress: '',
    },
    {},
  );
  const run = createRunner(memoryLogger().logger);
  const cli = (...args: string[]) =>
    imgflowAsync(
      ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', config.home, ...args],
      { IMGFLOW_USER: 'alice' },
      BUILD_TIMEOUT,
    );
  const arches: Arch[] = ['x86_64', 'i686', 'aarch64'];

  /**
   * One builder worker per arch for the duration of `fn`, each as `imgflow worker --role builder
   * --arch A` makes it (on builder.<arch>, emulation set up at its start). Inside withWorkers,
   * which sets up the test runtime first.
   */
  async function withBuilders<T>(fn: () => Promise<T>): Promise<T> {
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const builders: Worker[] = [];
    try {
      for (const arch of arches) {
        const { worker, plan } = await createWorker({
          role: 'builder',
          config,
          arch,
          connection,
          logger: createLogger(`builder-${arch}`, 'warn'),
        });
        expect(plan.taskQueue).toBe(`builder.${arch}`);
        builders.push(worker);
      }
      const running = builders.map((worker) => worker.run());
      try {
        return await fn();
      } finally {
        for (const worker of builders) worker.shutdown();
        await Promise.allSettled(running);
      }
    } finally {
      await connection.close();
    }
  }

  function recipe(image: string, arch: string): string {
    const file = path.join(dir, `${image}.yaml`);
    // As small as a bootable tree gets: minbase, no packages beyond it, no hooks; raw ext4 to look into.
    fs.writeFileSync(
      file,
      `image: ${image}\narch: ${arch}\nos: debian-12\nsource:\n  debootstrap: {suite: bookworm, variant: minbase}\nprepare: {hostname: node}\noutputs: [raw]\n`,
    );
    return file;
  }

  /** The architecture of /bin/sh in a stored raw ext4 image, by its ELF header and by `file`. */
  async function imageArch(raw: string): Promise<{ elf: string | undefined; file: string }> {
    const mnt = fs.mkdtempSync(path.join(dir, 'mnt-'));
    await run(['mount', '-o', 'loop,ro,noload', raw, mnt]);
    try {
      const sh = await resolveInRoot(mnt, '/bin/sh');
      return { elf: await treeArch(mnt), file: (await run(['file', '-b', sh])).stdout.trim() };
    } finally {
      await run(['umount', mnt]);
    }
  }

  it(
    'builds a minbase image for x86_64, i686 and aarch64 on their own builders, with binaries of that arch, and records how',
    async () => {
      await withWorkers(
        { workflowQueue: 'imgflow', activities: { [`nas.${host}`]: createNasActivities({ run, config }) } },
        () =>
          withBuilders(async () => {
            const started = Date.now();
            const results = await Promise.all(
              arches.map(async (arch) => {
                const t0 = Date.now();
                const built = await cli(
                  '--json',
                  'build',
                  recipe(`minbase-${arch}`, arch),
                  '-m',
                  `minbase for ${arch}`,
                  '--store',
                  host,
                );
                return { arch, built, wallMs: Date.now() - t0 };
              }),
            );
            const figures: string[] = [];
            for (const { arch, built, wallMs } of results) {
              expect([
                built.status,
                built.stderr
                  .split('\n')
                  .filter((l) => l.startsWith('imgflow:'))
                  .join('\n'),
              ]).toEqual([0, '']);
              const version = JSON.parse(built.stdout) as VersionRecord;
              expect(version.arch).toBe(arch);
              const emulated = arch === 'aarch64' || (arch === 'i686' && i386Emulated());
              expect(version.provenance.build).toEqual({
                arch,
                machine: 'x86_64',
                mode: emulated ? 'emulated' : 'native',
                ...(emulated
                  ? {
                      emulator: expect.stringMatching(
                        new RegExp(`^qemu-${arch === 'i686' ? 'i386' : arch}: qemu-`),
                      ) as string,
                    }
                  : {}),
              });
              const raw = version.artifacts.find((a) => a.format === 'raw')!;
              expect(raw.host).toBe(host);
              const found = await imageArch(raw.path);
              expect(found.elf).toBe(arch);
              expect(found.file).toMatch(FILE_SAYS[arch]!);
              const bootstrap = version.report.find((r) => r.phase === 'bootstrap')!;
              expect(bootstrap.packages).toBeGreaterThan(50);
              figures.push(
                `${arch}: bootstrap ${(bootstrap.durationMs / 1000).toFixed(0)} s, whole build ${(wallMs / 1000).toFixed(0)} s (${version.provenance.build!.mode})`,
              );
            }
            process.stdout.write(
              `builds for every architecture, at once in ${((Date.now() - started) / 1000).toFixed(0)} s:\n  ${figures.join('\n  ')}\n`,
            );

            const report = await cli('report', 'minbase-aarch64');
            expect(report.status).toBe(0);
            expect(report.stdout).toMatch(/^arch\s+aarch64, emulated on x86_64 \(qemu-aarch64: qemu-aarch64 version /m);
            expect((await cli('report', 'minbase-i686')).stdout).toMatch(
              i386Emulated() ? /^arch\s+i686, emulated on x86_64 \(qemu-i386: /m : /^arch\s+i686, native on x86_64$/m,
            );
          }),
      );
    },
    BUILD_TIMEOUT,
  );

  it("fails within its bound when no builder serves the recipe's arch", async () => {
    await withWorkers(
      { workflowQueue: 'imgflow', activities: { [`nas.${host}`]: createNasActivities({ run, config }) } },
      async () => {
        const t0 = Date.now();
        const result = await cli('build', recipe('minbase-s390x', 's390x'), '--store', host, '--builder-wait', '2');
        expect(result.status).toBe(1);
        expect(result.stderr.trim()).toMatch(
          /^imgflow: .*no builder for s390x is running \(nothing took the build from builder\.s390x\)/,
        );
        expect(Date.now() - t0).toBeLessThan(60_000);
      },
    );
  });
});
