/**
 * Revocation that follows the lineage, through the real CLI on real volumes (qcow2 clones, local
 * attach), a real VM pack and clones into other images: a dry run lists the channels (with the
 * entry each would roll back to), tags, packs, volumes and copies in other images, and changes
 * nothing; the revocation rolls each channel back to its previous usable entry in the same update,
 * leaves a channel with none as it is, marks the copies (a clone and a clone of it), and the fleet
 * view then shows the volumes as revoked and the copy's volume as marked; again, it changes
 * nothing; --keep-channels leaves the channels; bad input is refused in one line.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import type { ChannelEntry, HistoryEntry, VersionRecord } from '../../common/lineage.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import type { FleetRow } from '../../starters/fleet-client.js';
import { lineageHandle } from '../../starters/lineage-client.js';
import type { RevocationReport } from '../../starters/revocation-client.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';
import { localVolumeHosts } from '../support/volume-hosts.js';
import { until } from '../support/wait.js';

describe('revoke', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-revoke-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `rv${nasHost.slice(-6)}`;
  const clone = `${image}-c`;
  const clone2 = `${image}-cc`;
  const run = createRunner(memoryLogger().logger);
  const activities = localVolumeHosts({ home, nasHost, nodeHost, run, packs: true });
  const cli = imgflowAt(home);
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    expect([r.status, r.stderr], args.join(' ')).toEqual([0, '']);
    return r.stdout;
  };
  const json = async <T>(...args: string[]) => JSON.parse(await ok(...args, '--json')) as T;
  const map = (volume: string, ref: string) =>
    ok('map', volume, '--image', ref, '--nas', nasHost, '--compute', nodeHost);
  const channels = async (of = image) =>
    Object.fromEntries(
      (await json<(ChannelEntry & { channel: string })[]>('channels', of)).map((c) => [
        c.channel,
        `${c.tag} ${c.version} ${c.action}${c.reason ? ` ${c.reason}` : ''}`,
      ]),
    );
  const fleet = async (of: string) =>
    (await json<FleetRow[]>('fleet', '--image', of)).map(
      (r) => `${r.kind} ${r.name} ${r.version} ${r.from || '-'} ${r.status}: ${r.detail}`,
    );
  const history = (of = image) => json<HistoryEntry[]>('history', of);
  const versions = (of: string) => json<VersionRecord[]>('versions', of);

  it('plans, revokes, rolls back, marks copies, and shows it in the fleet', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      for (const n of [1, 2, 3]) await storeVersion(client, run, { home, nas: nasHost, image, n });
      for (const [v, tag] of [
        ['v1', 'gold'],
        ['v2', 'next'],
        ['v3', 'bad'],
      ] as const) {
        await ok('tag', image, '--version', v, '--name', tag);
        await ok('test-result', image, '--tag', tag, '--passed');
        await ok('promote', image, '--tag', tag, '--to', 'test');
        await ok('promote', image, '--tag', tag, '--to', 'prod');
      }
      // A channel that never carried another version: nothing to roll back to.
      await ok('promote', image, '--tag', 'bad', '--to', 'edge');
      await ok('clone', image, clone, '--version', 'v3');
      await ok('clone', clone, clone2);
      await map('rvk-a', `${image}@prod`);
      await map('rvk-b', `${image}:bad`);
      await map('rvk-c', `${clone}:v1`);
      await ok('pack', image, '--tag', 'bad', '--as', `${image}-web`, '--kind', 'vm');
      // v2 is revoked first, on no channel now: rollbacks skip it.
      const first = await json<RevocationReport>('revoke', image, '--version', 'v2', '--reason', 'old kernel');
      expect(first).toMatchObject({ changed: true, channels: [], tags: ['next'], clones: [], volumes: [] });

      const query = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${image}' AND ${SA.version.name} = 'v3'`;
      await until(
        'visibility to show the 2 volumes on v3',
        async () => (await client.workflow.count(query)).count === 2,
      );
      const lineages = `${SA.kind.name} = 'lineage' AND ${SA.image.name} = '${clone2}'`;
      await until(
        'visibility to show the clone of the clone',
        async () => (await client.workflow.count(lineages)).count === 1,
      );

      // The dry run: the plan, and nothing changed.
      const before = { channels: await channels(), history: await history(), copies: await versions(clone) };
      const plan = await json<RevocationReport>(
        'revoke',
        image,
        '--version',
        'v3',
        '--reason',
        'CVE-2026-1',
        '--dry-run',
      );
      expect(plan).toMatchObject({
        image,
        version: 'v3',
        dryRun: true,
        changed: false,
        alreadyRevoked: false,
        channels: [
          { channel: 'test', tag: 'bad', action: 'rollback', to: { version: 'v1', tag: 'gold' } },
          { channel: 'prod', tag: 'bad', action: 'rollback', to: { version: 'v1', tag: 'gold' } },
          { channel: 'edge', tag: 'bad', action: 'none-usable' },
        ],
        packs: [{ name: `${image}-web`, kind: 'vm', host: nasHost }],
        volumes: [
          { volume: 'rvk-a', nas: nasHost, compute: nodeHost },
          { volume: 'rvk-b', nas: nasHost, compute: nodeHost },
        ],
        clones: [
          { image: clone, version: 'v1', through: [], mark: 'would-mark' },
          { image: clone2, version: 'v1', through: [`${clone}:v1`], mark: 'would-mark' },
        ],
        pushes: [],
      });
      expect(plan.tags.sort()).toEqual(['bad', `cloned-to-${clone}`]);
      const table = await ok('revoke', image, '--version', 'v3', '--reason', 'CVE-2026-1', '--dry-run');
      const lines = table.trimEnd().split('\n');
      expect(lines[0]).toBe(`${image}:v3 would be revoked (dry run, nothing changed): CVE-2026-1`);
      expect(lines[1]).toMatch(/^WHAT\s+NAME\s+DETAIL$/);
      expect(table).toMatch(/channel\s+test\s+bad -> gold \(v1\): would roll back/);
      expect(table).toMatch(/channel\s+edge\s+bad: no usable earlier entry, left as it is/);
      expect(table).toMatch(new RegExp(`volume\\s+rvk-a\\s+on ${nodeHost} from ${nasHost}`));
      expect(table).toMatch(new RegExp(`clone\\s+${clone2}:v1\\s+would be marked, through ${clone}:v1`));
      expect({ channels: await channels(), history: await history(), copies: await versions(clone) }).toEqual(before);

      // The revocation: channels rolled back in the same update, copies marked.
      const done = await json<RevocationReport>('revoke', image, '--version', 'v3', '--reason', 'CVE-2026-1');
      expect(done).toMatchObject({
        dryRun: false,
        changed: true,
        revoked: { by: 'alice', reason: 'CVE-2026-1' },
        channels: plan.channels,
        clones: [
          { image: clone, version: 'v1', mark: 'marked' },
          { image: clone2, version: 'v1', mark: 'marked' },
        ],
      });
      expect(await channels()).toEqual({
        test: 'gold v1 rollback revoked: CVE-2026-1',
        prod: 'gold v1 rollback revoked: CVE-2026-1',
        edge: 'bad v3 promote',
      });
      expect((await history()).slice(-3).map((e) => `${e.op} ${e.detail}`)).toEqual([
        'revoke v3: CVE-2026-1',
        'rollback test -> gold (v1): revoked: CVE-2026-1',
        'rollback prod -> gold (v1): revoked: CVE-2026-1',
      ]);
      const marked = { image, version: 'v3', by: 'alice', reason: 'CVE-2026-1' };
      expect((await versions(clone))[0]!.ancestorRevoked).toMatchObject(marked);
      expect((await versions(clone2))[0]!.ancestorRevoked).toMatchObject({ ...marked, through: [`${clone}:v1`] });
      expect(await ok('versions', clone2)).toMatch(new RegExp(`ok; copy of revoked ${image}:v3: CVE-2026-1`));
      expect((await history(clone)).at(-1)).toMatchObject({ op: 'ancestor-revoked', by: 'alice' });
      expect(await ok('report', clone2)).toMatch(
        new RegExp(`\\nANCESTOR  ${image}:v3 \\(through ${clone}:v1\\) REVOKED \\S+ by alice: CVE-2026-1\\n`),
      );

      expect(await fleet(image)).toEqual([
        `pack ${image}-web v3 :bad revoked: by alice: CVE-2026-1`,
        `volume rvk-a v3 @prod revoked: by alice: CVE-2026-1`,
        `volume rvk-b v3 :bad revoked: by alice: CVE-2026-1`,
      ]);
      expect(await fleet(clone)).toEqual([
        `volume rvk-c v1 - off-channel: tagged cloned-to-${clone2}; copy of ${image}:v3, revoked by alice: CVE-2026-1`,
      ]);

      // Again: nothing changes, and it says so.
      const entries = (await history()).length;
      const again = await cli('revoke', image, '--version', 'v3', '--reason', 'CVE-2026-1');
      expect([again.status, again.stderr]).toEqual([0, '']);
      expect(again.stdout.split('\n')[0]).toMatch(
        new RegExp(`^${image}:v3 was revoked already by alice at \\S+: CVE-2026-1; the revocation changes nothing$`),
      );
      expect(again.stdout).toMatch(/channel\s+edge\s+bad: left as it is\n/);
      expect(again.stdout).toMatch(new RegExp(`clone\\s+${clone}:v1\\s+marked already \\(copy of ${image}:v3\\)`));
      expect((await history()).length).toBe(entries);
      expect((await history(clone)).filter((e) => e.op === 'ancestor-revoked')).toHaveLength(1);

      // --keep-channels: the channel stays where it is.
      await storeVersion(client, run, { home, nas: nasHost, image, n: 4 });
      await ok('tag', image, '--version', 'v4', '--name', 'four');
      await ok('promote', image, '--tag', 'four', '--to', 'test');
      const kept = await json<RevocationReport>(
        'revoke',
        image,
        '--version',
        'v4',
        '--reason',
        'wrong mirror',
        '--keep-channels',
      );
      expect(kept).toMatchObject({ changed: true, channels: [{ channel: 'test', tag: 'four', action: 'keep' }] });
      expect((await channels()).test).toBe('four v4 promote');

      // Bad input: one line, exit 2, nothing changed.
      for (const [args, message] of [
        [['--version', 'No/Such', '--reason', 'x'], /^imgflow: --version: expected a name/],
        [
          ['--version', 'v9', '--reason', 'x'],
          /^imgflow: --version: expected a version of .* \(4 versions, the newest v4\), got "?v9/,
        ],
        [['--version', 'v1', '--reason', ''], /^imgflow: --reason: expected /],
        [['--version', 'v1'], /^imgflow: required option '--reason <text>' not specified/],
      ] as const) {
        const bad = await cli('revoke', image, ...args);
        expect([bad.status, bad.stderr.trimEnd().split('\n').length], args.join(' ')).toEqual([2, 1]);
        expect(bad.stderr, args.join(' ')).toMatch(message);
      }
      const missing = await cli('revoke', 'no-such-image', '--version', 'v1', '--reason', 'x');
      expect([missing.status, missing.stderr]).toEqual([
        2,
        expect.stringMatching(/^imgflow: image: expected an image with at least one build/),
      ]);
      expect((await history()).length).toBe(entries + 4);

      for (const [name, of] of [
        ['lineageWorkflow-revoke', image],
        ['lineageWorkflow-ancestor-revoked', clone],
      ] as const) {
        const h = lineageHandle(client, of);
        await h.terminate('test done');
        await saveHistory(name, h);
      }
    });
    await connection.close();
  }, 300_000);
});
