/**
 * `imgflow demo` as a new user runs it: against a running server, with its own in-process
 * workers, all the way from a real debootstrap build to a promotion to prod, then a subscription to
 * a signed image list the demo serves itself. A second run keeps the subscription and goes on.
 */
import { describe, expect, inject, it } from 'vitest';
import type { VersionRecord } from '../../common/lineage.js';
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
    expect(result.stderr).toMatch(/\[1\/4\] storage pipeline/);
    expect(result.stderr).toMatch(/\[3\/4\] tag it, test it, promote it/);
    expect(result.stderr).toMatch(/\[4\/4\] subscribe to a signed image list/);
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
  }, 600_000);

  it('keeps the subscription on a second run: nothing to do at the version applied, then the next one swapped in', async () => {
    const { step4 } = await demo();
    expect(step4.subscribed).toBe(false);
    expect(step4.syncs.map((s) => [s.status, s.listVersion])).toEqual([
      ['applied', '2'],
      ['applied', '3'],
    ]);
    expect(step4.syncs[0]!.report).toMatchObject({ add: [], update: [], unchanged: ['demo-appliance'] });
    expect(step4.registry.current).toMatchObject({ name: 'demo-appliance', state: 'READY', mode: '644', version: '3' });
    expect(step4.registry.parked).toMatchObject({ state: 'DISABLED', mode: '700', version: '2' });
  }, 600_000);
});
