/**
 * `imgflow demo` as a new user runs it: against a running server, with its own in-process
 * workers, all the way from a real debootstrap build to a promotion to prod, then a subscription to
 * a signed image list the demo serves itself, and the prod version pushed to a registry the demo
 * starts and registered, verified, by a second site; last, the prod version mapped to a volume and
 * revoked, and the fleet shows that volume on a revoked version. A second run keeps the
 * subscriptions and goes on.
 */
import { describe, expect, inject, it } from 'vitest';
import type { VersionRecord } from '../../common/lineage.js';
import type { FleetRow } from '../../starters/fleet-client.js';
import type { DemoOciSummary } from '../../starters/demo-oci.js';
import type { RevocationReport } from '../../starters/revocation-client.js';
import type { DemoSubscriptionSummary } from '../../starters/demo-subscription.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { NAMESPACE } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const PARKED = /^demo-appliance_EXPIRED_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$/;

interface Summary {
  step1: { volume: { readsThrough: boolean } };
  step2: VersionRecord;
  step3: { prod: { version: string } };
  step4: DemoSubscriptionSummary;
  step5: DemoOciSummary;
  step6: { report: RevocationReport; fleet: FleetRow[] };
}

/** The second site's image of the prod tag, as the demo shows its catalog. */
const ociImage = (summary: Summary) => {
  const { push } = summary.step5;
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
function expectRevoked({ step2, step6 }: Summary) {
  expect(step6.report).toMatchObject({ image: 'demo-node', version: step2.id, changed: true });
  expect(step6.report.volumes).toHaveLength(1);
  expect(step6.report.channels.map((c) => c.channel).sort()).toEqual(['prod', 'test']);
  expect(step6.fleet).toEqual([
    expect.objectContaining({ kind: 'volume', version: step2.id, from: '@prod', status: 'revoked' }),
  ]);
}

describe('imgflow demo', () => {
  requireTools('debootstrap', 'qemu-img', 'rsync', 'mkfs.ext4', 'openssl');
  const home = tempDir();
  const demo = async (): Promise<Summary> => {
    const result = await imgflowAsync(
      ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home, '--json', 'demo'],
      {},
      600_000,
    );
    expect(result.stderr).toMatch(/\[1\/6\] storage pipeline/);
    expect(result.stderr).toMatch(/\[3\/6\] tag it, test it, promote it/);
    expect(result.stderr).toMatch(/\[4\/6\] subscribe to a signed image list/);
    expect(result.stderr).toMatch(/\[5\/6\] push the prod version, signed, to a registry started here/);
    expect(result.stderr).toMatch(/\[6\/6\] map the prod version to a volume, revoke the version, and show the fleet/);
    expect(result.status, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as Summary;
  };

  it('runs the main job end to end and prints a summary', async () => {
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
    expect(summary.step3.prod.version).toBe(summary.step2.id);

    const { syncs, appliances, registry } = summary.step4;
    expect(summary.step4.subscribed).toBe(true);
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
    const { push, again, sync, images } = summary.step5;
    expect(summary.step5.subscribed).toBe(true);
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
  }, 600_000);

  it('keeps the subscriptions on a second run: nothing to do at the version applied, then the next one swapped in', async () => {
    const summary = await demo();
    const { step4, step5 } = summary;
    expect(step4.subscribed).toBe(false);
    expect(step4.syncs.map((s) => [s.status, s.listVersion])).toEqual([
      ['applied', '2'],
      ['applied', '3'],
    ]);
    expect(step4.syncs[0]!.report).toMatchObject({ add: [], update: [], unchanged: ['demo-appliance'] });
    expect(step4.registry.current).toMatchObject({ name: 'demo-appliance', state: 'READY', mode: '644', version: '3' });
    expect(step4.registry.parked).toMatchObject({ state: 'DISABLED', mode: '700', version: '2' });

    // A new prod version: the tag moves, only its disk is uploaded, and the second site swaps it in.
    expect(step5.subscribed).toBe(false);
    expect(step5.push).toMatchObject({ uploadedBlobs: 1, manifestPut: true, signed: true });
    expect(step5.again).toMatchObject({ uploadedBlobs: 0, signed: false });
    expect(step5.sync).toMatchObject({ status: 'applied', report: { add: [], update: ['demo-node-prod'] } });
    expect(step5.images).toContainEqual(expect.objectContaining(ociImage(summary)));
    expectRevoked(summary);
  }, 600_000);
});
