/**
 * `imgflow demo` as a new user runs it: against a running server, with its own in-process
 * workers, all the way from a real debootstrap build to a promotion to prod.
 */
import { describe, expect, inject, it } from 'vitest';
import type { VersionRecord } from '../../common/lineage.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { NAMESPACE } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

describe('imgflow demo', () => {
  requireTools('debootstrap', 'qemu-img', 'rsync', 'mkfs.ext4');
  const home = tempDir();

  it('runs the main job end to end and prints a summary', async () => {
    const result = await imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home, '--json', 'demo'], {}, 600_000);
    expect(result.stderr).toMatch(/\[1\/3\] storage pipeline/);
    expect(result.stderr).toMatch(/\[3\/3\] tag it, test it, promote it/);
    expect(result.status).toBe(0);
    const summary = JSON.parse(result.stdout) as { step1: { volume: { readsThrough: boolean } }; step2: VersionRecord; step3: { prod: { version: string } } };
    expect(summary.step1.volume.readsThrough).toBe(true);
    expect(summary.step2.packages).toBeGreaterThan(50);
    expect(summary.step2.report.map((r) => r.phase)).toEqual(['bootstrap', 'hook-motd', 'hook-marker', 'prepare', 'pack']);
    expect(summary.step3.prod.version).toBe(summary.step2.id);
  });
});
