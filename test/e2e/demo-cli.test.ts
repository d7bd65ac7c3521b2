/**
 * `imgflow demo` as a new user runs it: against a running server, with its own in-process
 * workers, all the way from a real debootstrap build, built again for i686 by a builder worker of
 * that arch, to a promotion to prod, then a subscription to
 * a signed image list the demo serves itself, and the prod version pushed to a registry the demo
 * starts and registered, verified, by a second site; last, the prod version mapped to a volume and
 * revoked, and the fleet shows that volume on a revoked version. A second run keeps the
 * subscriptions and goes on, and takes the i686 bootstrap from the cache.
 */
import fs from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { BOOTSTRAP_REUSED } from '../../activities/builder/phases/bootstrap.js';
import type { VersionRecord } from '../../common/lineage.js';
import type { FleetRow } from '../../starters/fleet-client.js';
import type { DemoOciSummary } from '../../starters/demo-oci.js';
import type { RevocationReport } from '../../starters/revocation-client.js';
import type { DemoSubscriptionSummary } from '../../starters/demo-subscription.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { NAMESPACE } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

type Cli = (...args: string[]) => ReturnType<typeof imgflowAsync>;

/**
 * The first run bootstraps twice, the i686 tree through qemu-i386 where the kernel cannot run i386
 * itself (14 min on two loaded cores); later runs take both from the cache.
 */
const FIRST_RUN_TIMEOUT = 30 * 60_000;

const PARKED = /^demo-appliance_EXPIRED_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$/;

interface Summary {
  step1: { volume: { readsThrough: boolean } };
  step2: VersionRecord;
  step3: VersionRecord & { packageArches: Record<string, number> };
  step4: { prod: { version: string } };
  step5: DemoSubscriptionSummary;
  step6: DemoOciSummary;
  step7: { report: RevocationReport; fleet: FleetRow[] };
}

/**
 * Whether i386 binaries run emulated here: only a kernel without IA32 emulation needs a
 * binfmt_misc handler for them, which the i686 builder registers (read from the kernel).
 */
const i386Emulated = () =>
  fs.existsSync('/proc/sys/fs/binfmt_misc/qemu-i386') &&
  fs.readFileSync('/proc/sys/fs/binfmt_misc/qemu-i386', 'utf8').startsWith('enabled');

/**
 * The second arch's version: in a lineage of its own, built for i686 on builder.i686 (natively on
 * an x86_64 kernel that runs i386, else through qemu-i386), its packages i386's; from the
 * debootstrap the first time, from the builder's bootstrap cache later.
 */
function expectSecondArch(summary: Summary, bootstrapReused: boolean) {
  const { step2, step3 } = summary;
  const emulated = i386Emulated();
  expect(step3).toMatchObject({ arch: 'i686', message: 'demo build' });
  // Its own lineage and files: version numbers count per lineage, so only the files tell them apart.
  expect(step3.artifacts[0]!.path).toContain(`/demo-node-i686/${step3.id}/`);
  expect(step3.artifacts[0]!.sha256).not.toBe(step2.artifacts[0]!.sha256);
  expect(step3.provenance.build).toEqual({
    arch: 'i686',
    machine: 'x86_64',
    mode: emulated ? 'emulated' : 'native',
    ...(emulated ? { emulator: expect.stringMatching(/^qemu-i386: qemu-/) as unknown } : {}),
  });
  expect(step3.packageArches.i386).toBeGreaterThan(50);
  expect(Object.keys(step3.packageArches).sort()).toEqual(['all', 'i386']);
  const bootstrap = step3.report.find((r) => r.phase === 'bootstrap')!;
  expect(bootstrap.note).toBe(bootstrapReused ? BOOTSTRAP_REUSED : undefined);
}

/** The second site's image of the prod tag, as the demo shows its catalog. */
const ociImage = (summary: Summary) => {
  const { push } = summary.step6;
  const [address] = push.reference.split('/');
  return {
    name: 'demo-node-prod',
    state: 'READY',
    version: summary.step2.id,
    uri: `oci://${address}/demo/demo-node@sha256:${summary.step2.artifacts[0]!.sha256}`,
    comments: expect.stringMatching(
      new RegExp(
        `^oci ${address!.replace(/\./g, '\\.')}/demo/demo-node:prod@${push.digest}; signature verified \\(key sha256:[0-9a-f]{16}\\.\\.\\.\\)$`,
      ),
    ) as unknown,
  };
};

/** The version built is revoked, its volume counted in the report and shown revoked in the fleet. */
function expectRevoked({ step2, step7 }: Summary) {
  expect(step7.report).toMatchObject({ image: 'demo-node', version: step2.id, changed: true });
  expect(step7.report.volumes).toHaveLength(1);
  expect(step7.report.channels.map((c) => c.channel).sort()).toEqual(['prod', 'test']);
  expect(step7.fleet).toEqual([
    expect.objectContaining({ kind: 'volume', version: step2.id, from: '@prod', status: 'revoked' }),
  ]);
}

describe('imgflow demo', () => {
  // The i686 build runs natively on an x86_64 kernel with IA32 emulation, else through qemu-i386.
  requireTools('debootstrap', 'qemu-img', 'rsync', 'mkfs.ext4', 'openssl', 'qemu-i386-static');
  const home = tempDir();
  let firstI686: string | undefined;
  const cli: Cli = (...args) =>
    imgflowAsync(
      ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home, ...args],
      {},
      FIRST_RUN_TIMEOUT,
    );
  const demo = async (): Promise<Summary> => {
    const result = await cli('--json', 'demo');
    expect(result.stderr).toMatch(/\[1\/7\] storage pipeline/);
    expect(result.stderr).toMatch(
      /\[3\/7\] build it for i686 too, on builder\.i686 alongside the first, into a version of demo-node-i686/,
    );
    expect(result.stderr).toMatch(/\[4\/7\] tag it, test it, promote it/);
    expect(result.stderr).toMatch(/\[5\/7\] subscribe to a signed image list/);
    expect(result.stderr).toMatch(/\[6\/7\] push the prod version, signed, to a registry started here/);
    expect(result.stderr).toMatch(/\[7\/7\] map the prod version to a volume, revoke the version, and show the fleet/);
    expect(result.status, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as Summary;
  };

  it("refuses, in one line and before it starts anything, a second arch that is the machine's own", async () => {
    const result = await cli('demo', '--second-arch', 'x86_64');
    expect([result.status, result.stderr]).toEqual([
      2,
      `imgflow: --second-arch: expected an arch other than this machine's (x86_64), got "x86_64"\n`,
    ]);
  });

  it(
    'runs the main job end to end and prints a summary',
    async () => {
      const summary = await demo();
      expect(summary.step1.volume.readsThrough).toBe(true);
      expect(summary.step2.packages).toBeGreaterThan(50);
      expect(summary.step2.report.map((r) => r.phase)).toEqual([
        'bootstrap',
        'hook-motd',
        'hook-marker',
        'prepare',
        'pack',
      ]);
      expectSecondArch(summary, false);
      firstI686 = summary.step3.id;
      expect(summary.step4.prod.version).toBe(summary.step2.id);

      const { syncs, appliances, registry } = summary.step5;
      expect(summary.step5.subscribed).toBe(true);
      expect(syncs.map((s) => [s.status, s.listVersion])).toEqual([
        ['applied', '1'],
        ['applied', '2'],
      ]);
      expect(syncs[0]!.report).toMatchObject({ add: ['demo-appliance'], update: [] });
      expect(syncs[1]!.report).toMatchObject({ add: [], update: ['demo-appliance'] });
      expect(appliances).toEqual([
        expect.objectContaining({
          identifier: 'demo-appliance',
          state: 'updated',
          imageVersion: '2',
          listVersion: '2',
          registryName: 'demo-appliance',
        }),
      ]);
      // The new image took the name and the access the site gave its predecessor, which is parked locked and disabled.
      expect(registry.current).toMatchObject({ name: 'demo-appliance', state: 'READY', mode: '644', version: '2' });
      expect(registry.parked).toMatchObject({ state: 'DISABLED', mode: '700', version: '1' });
      expect(registry.parked!.name).toMatch(PARKED);
      expect(appliances[0]!.note).toContain(`parked as ${registry.parked!.name}`);

      // The prod version through the registry: pushed and signed, again nothing sent; the second site registers it verified.
      const { push, again, sync, images } = summary.step6;
      expect(summary.step6.subscribed).toBe(true);
      expect(push).toMatchObject({
        reference: expect.stringMatching(/^127\.0\.0\.1:\d+\/demo\/demo-node:prod@sha256:[0-9a-f]{64}$/) as unknown,
        uploadedBlobs: 2,
        uploadedBytes: summary.step2.artifacts[0]!.bytes,
        signed: true,
      });
      expect(again).toMatchObject({ digest: push.digest, uploadedBlobs: 0, manifestPut: false, signed: false });
      expect(sync).toMatchObject({ status: 'applied', report: { add: ['demo-node-prod'], update: [] } });
      expect(images).toEqual([expect.objectContaining(ociImage(summary))]);
      expectRevoked(summary);
    },
    FIRST_RUN_TIMEOUT,
  );

  it('keeps the subscriptions on a second run: nothing to do at the version applied, then the next one swapped in; the i686 bootstrap comes from the cache', async () => {
    const summary = await demo();
    expectSecondArch(summary, true);
    // The same lineage goes on: its next version.
    expect(summary.step3.id).not.toBe(firstI686);
    const { step5, step6 } = summary;
    expect(step5.subscribed).toBe(false);
    expect(step5.syncs.map((s) => [s.status, s.listVersion])).toEqual([
      ['applied', '2'],
      ['applied', '3'],
    ]);
    expect(step5.syncs[0]!.report).toMatchObject({ add: [], update: [], unchanged: ['demo-appliance'] });
    expect(step5.registry.current).toMatchObject({ name: 'demo-appliance', state: 'READY', mode: '644', version: '3' });
    expect(step5.registry.parked).toMatchObject({ state: 'DISABLED', mode: '700', version: '2' });

    // A new prod version: the tag moves, only its disk is uploaded, and the second site swaps it in.
    expect(step6.subscribed).toBe(false);
    expect(step6.push).toMatchObject({ uploadedBlobs: 1, manifestPut: true, signed: true });
    expect(step6.again).toMatchObject({ uploadedBlobs: 0, signed: false });
    expect(step6.sync).toMatchObject({ status: 'applied', report: { add: [], update: ['demo-node-prod'] } });
    expect(step6.images).toContainEqual(expect.objectContaining(ociImage(summary)));
    expectRevoked(summary);
  }, 600_000);
});
