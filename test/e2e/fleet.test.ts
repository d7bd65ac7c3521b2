/**
 * The fleet view through the real CLI, on real volumes (qcow2 clones, local attach) and a real VM
 * pack: each row shows the version a volume or pack runs and how it was chosen, and its status
 * follows the lineage: current while its channel carries it, superseded once the channel moves on,
 * off-channel when chosen by id or tag and never promoted, revoked when its version is revoked.
 * The Web UI's search finds the volumes running a version through the same search attributes.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import type { FleetRow } from '../../starters/fleet-client.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';
import { localVolumeHosts } from '../support/volume-hosts.js';
import { until } from '../support/wait.js';

describe('fleet', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-fleet-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `fl${nasHost.slice(-6)}`;
  const run = createRunner(memoryLogger().logger);
  const activities = localVolumeHosts({ home, nasHost, nodeHost, run, packs: true });
  const cli = imgflowAt(home);
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    expect([r.status, r.stderr], args.join(' ')).toEqual([0, '']);
    return r.stdout;
  };
  const map = (volume: string, ref: string) =>
    ok('map', volume, '--image', `${image}${ref}`, '--nas', nasHost, '--compute', nodeHost);
  /** Each row as `name from status`, in the fleet's order. */
  const fleet = async () =>
    (JSON.parse(await ok('fleet', '--image', image, '--json')) as FleetRow[]).map(
      (r) => `${r.kind} ${r.name} ${r.host} ${r.version} ${r.from || '-'} ${r.status}: ${r.detail}`,
    );

  it('shows what each volume and pack runs, and follows promotions and a revocation', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      await storeVersion(client, run, { home, nas: nasHost, image, n: 1 });
      await storeVersion(client, run, { home, nas: nasHost, image, n: 2 });
      await ok('tag', image, '--version', 'v1', '--name', 'gold');
      await ok('tag', image, '--version', 'v2', '--name', 'next');
      await ok('promote', image, '--tag', 'gold', '--to', 'test');
      await map('flt-a', '@test');
      await map('flt-b', ':v2');
      await map('flt-c', ':gold');
      await ok('pack', image, '--tag', 'next', '--as', 'web', '--kind', 'vm');

      expect(await fleet()).toEqual([
        `pack web ${nasHost} v2 :next off-channel: tagged next`,
        `volume flt-a ${nodeHost} v1 @test current: on test`,
        `volume flt-b ${nodeHost} v2 - off-channel: tagged next`,
        `volume flt-c ${nodeHost} v1 :gold current: on test`,
      ]);

      await ok('promote', image, '--tag', 'next', '--to', 'test');
      expect(await fleet()).toEqual([
        `pack web ${nasHost} v2 :next current: on test`,
        `volume flt-a ${nodeHost} v1 @test superseded: test now at v2`,
        `volume flt-b ${nodeHost} v2 - current: on test`,
        `volume flt-c ${nodeHost} v1 :gold superseded: test now at v2`,
      ]);

      await ok('revoke', image, '--version', 'v1', '--reason', 'CVE in openssl');
      expect(await fleet()).toEqual([
        `pack web ${nasHost} v2 :next current: on test`,
        `volume flt-a ${nodeHost} v1 @test revoked: by alice: CVE in openssl`,
        `volume flt-b ${nodeHost} v2 - current: on test`,
        `volume flt-c ${nodeHost} v1 :gold revoked: by alice: CVE in openssl`,
      ]);

      // The table for people: a row each, and the counts.
      const table = await ok('fleet', '--image', image);
      expect(table.split('\n')[0]).toMatch(/^HOST\s+KIND\s+NAME\s+NAS\s+VERSION \(FROM\)\s+STATUS\s+DETAIL$/);
      expect(table).toMatch(
        new RegExp(`${nodeHost}\\s+volume\\s+flt-a\\s+${nasHost}\\s+${image}:v1 \\(@test\\)\\s+revoked`),
      );
      expect(table.trimEnd().split('\n').at(-1)).toBe(
        '4 on 2 hosts: 2 current, 0 superseded, 2 revoked, 0 removed, 0 off-channel',
      );

      // What the Web UI's search finds: the volumes running v1.
      const query = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${image}' AND ${SA.version.name} = 'v1'`;
      await until(
        'visibility to show the 2 volumes on v1',
        async () => (await client.workflow.count(query)).count === 2,
      );

      const bad = await cli('fleet', '--image', 'No/Such');
      expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/^imgflow: --image: expected a name /)]);
      const missing = await cli('fleet', '--image', 'no-such-image');
      expect([missing.status, missing.stderr]).toEqual([
        2,
        expect.stringMatching(/^imgflow: image: expected an image with at least one build/),
      ]);
    });
    await connection.close();
  }, 300_000);
});
