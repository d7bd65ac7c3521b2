/**
 * The lineage entity workflow on a real server: versions, tags, channels, gated promotion,
 * rollback, revocation; bad requests rejected by validators without touching history; older
 * history entries archived on the control host before each continue-as-new and shown again by
 * `imgflow history`; every tag, test result, channel and history entry intact through 5,000
 * operations sent 8 at a time across several continues-as-new, with the state each run hands to
 * the next kept small; removed versions' full records archived too, a stub left in the state, and
 * shown again by `imgflow report`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { createLineageHistoryActivities } from '../../activities/control/lineage-history.js';
import { createNasRetentionActivities } from '../../activities/nas/retention.js';
import { isStub, type HistoryEntry, type VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { CONTROL_QUEUE, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { fullVersion, lineageHistory, lineageHistoryPage, lineageView } from '../../starters/lineage-client.js';
import {
  DEFAULT_KEEP_HISTORY,
  describeQuery,
  gcUpdate,
  historyQuery,
  promoteUpdate,
  registerVersionUpdate,
  resolveQuery,
  revokeUpdate,
  rollbackUpdate,
  tagsQuery,
  tagUpdate,
  testResultSignal,
  testResultUpdate,
  versionQuery,
  versionsQuery,
  type LineageInput,
} from '../../workflows/lineage/messages.js';
import { lineageArchivedVersionWorkflow } from '../../workflows/lineage/archived-version-workflow.js';
import { lineageHistoryWorkflow } from '../../workflows/lineage/history-workflow.js';
import { lineageWorkflow } from '../../workflows/lineage/workflow.js';
import { mapLimited } from '../../lib/concurrency.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { decodePayload, testClient, uniqueQueue, withWorkers, expectRejected } from '../support/temporal.js';
import { newVersion } from '../support/versions.js';

/** The run ids of a workflow, first to current, following its continues-as-new. */
async function runsOf(client: Client, workflowId: string, firstRunId: string): Promise<string[]> {
  const runs = [firstRunId];
  for (;;) {
    const last = (await client.workflow.getHandle(workflowId, runs.at(-1)).fetchHistory()).events!.at(-1)!;
    const next = last.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
    if (!next) return runs;
    runs.push(next);
  }
}

/** What each run handed to the next: the size of its continue-as-new input, the history it carried, and its state. */
async function carriedStates(client: Client, workflowId: string, runs: string[]) {
  const carried = [];
  for (const run of runs.slice(0, -1)) {
    const last = (await client.workflow.getHandle(workflowId, run).fetchHistory()).events!.at(-1)!;
    const data = (await decodePayload(last.workflowExecutionContinuedAsNewEventAttributes!.input!.payloads![0]!)).data!;
    const state = (JSON.parse(Buffer.from(data).toString('utf8')) as LineageInput).state!;
    carried.push({
      run,
      bytes: data.length,
      historyBytes: JSON.stringify(state.history).length,
      history: state.history.length,
      archived: state.archive?.count ?? 0,
      state,
    });
  }
  return carried;
}

const seqs = (entries: HistoryEntry[]) => entries.map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('lineage workflow', () => {
  const home = tempDir();
  // The control host's worker, where lineages archive their older history.
  const control = createLineageHistoryActivities({ config: { home, host: 'control1' } });
  const cli = imgflowAt(home, {});

  it('tags, promotes through a gated channel, rolls back and revokes, rejecting bad requests', async () => {
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue,
        workflowId: `lineage-${image}`,
        args: [{ image }],
      });
      const v1 = await h.executeUpdate(registerVersionUpdate, { args: [newVersion(1)] });
      const v2 = await h.executeUpdate(registerVersionUpdate, { args: [newVersion(2)] });
      expect([v1.id, v2.id]).toEqual(['v1', 'v2']);

      const auto = await h.executeUpdate(tagUpdate, { args: [{ by: 'alice' }] });
      expect(auto.name).toMatch(/^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-RELEASE-by-alice$/);
      expect(auto.version).toBe('v2');
      await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v1', name: 'first' }] });

      await expectRejected(
        h,
        () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v2', name: 'first' }] }),
        /name: expected a tag name not yet used/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v9' }] }),
        /version: expected a version of/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', name: '../etc' }] }),
        /name: expected a tag of/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'nope', channel: 'test' }] }),
        /tag: expected a tag of/,
      );

      // test is not gated; prod needs a passed test result (or --force with a reason).
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'test' }] });
      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'prod' }] }),
        /passed test result.*gated channel prod/,
      );
      await h.executeUpdate(testResultUpdate, {
        args: [{ by: 'ci', tag: 'first', passed: true, note: 'booted node c1' }],
      });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'prod' }] });
      await expectRejected(
        h,
        () => h.executeUpdate(rollbackUpdate, { args: [{ by: 'alice', channel: 'prod' }] }),
        /earlier entry to roll back to/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(rollbackUpdate, { args: [{ by: 'alice', channel: 'staging' }] }),
        /no history/,
      );

      // A test result by signal, as a CI job would send it.
      await h.signal(testResultSignal, { by: 'ci', tag: auto.name, passed: true });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'bob', tag: auto.name, channel: 'prod' }] });
      const back = await h.executeUpdate(rollbackUpdate, {
        args: [{ by: 'bob', channel: 'prod', reason: 'kernel panic on c7' }],
      });
      expect(back).toMatchObject({ version: 'v1', tag: 'first', action: 'rollback', by: 'bob' });

      // The revocation rolls prod (back on v1) back to its previous usable entry; test has none and stays.
      const revoked = await h.executeUpdate(revokeUpdate, {
        args: [{ by: 'alice', version: 'v1', reason: 'CVE-2026-0001' }],
      });
      expect(revoked.channels).toEqual([
        { channel: 'test', tag: 'first', action: 'none-usable' },
        { channel: 'prod', tag: 'first', action: 'rollback', to: { version: 'v2', tag: auto.name } },
      ]);
      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'test' }] }),
        /revoked by alice: CVE-2026-0001/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: auto.name, channel: 'prod', force: true }] }),
        /reason: expected a reason/,
      );
      await h.executeUpdate(promoteUpdate, {
        args: [{ by: 'alice', tag: auto.name, channel: 'prod', force: true, reason: 'hotfix' }],
      });

      const view = await lineageView(client, image);
      expect(view.channels.prod).toMatchObject({
        current: { version: 'v2', forced: true, reason: 'hotfix' },
        entries: 5,
      });
      expect(view.channels.test?.current?.version).toBe('v1');
      expect(view.versions.find((v) => v.id === 'v1')?.revoked?.reason).toBe('CVE-2026-0001');
      const { entries: history, archive } = await h.query(historyQuery, {});
      expect(archive).toBeUndefined();
      expect(history.map((e) => e.op)).toEqual([
        'register',
        'register',
        'tag',
        'tag',
        'promote',
        'test-result',
        'promote',
        'test-result',
        'promote',
        'rollback',
        'revoke',
        'rollback',
        'promote',
      ]);
      const described = await h.describe();
      expect(described.typedSearchAttributes.get(SA.image)).toBe(image);
      expect(described.typedSearchAttributes.get(SA.channels)).toEqual(
        expect.arrayContaining([`prod=${auto.name}`, 'test=first']),
      );
      await h.terminate('test done');
      await saveHistory('lineageWorkflow', h);
    });
    await connection.close();
  });

  it('continues as new with all state intact; a run between two continues-as-new is saved for replay', async () => {
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue,
        workflowId: `lineage-${image}`,
        args: [{ image, maxHistoryEvents: 150 }],
      });
      for (let i = 1; i <= 60; i++) {
        await h.executeUpdate(registerVersionUpdate, { args: [newVersion(i)] });
        await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: `v${i}`, name: `t${i}` }] });
      }
      const runs = await runsOf(client, h.workflowId, h.firstExecutionRunId);
      expect(runs.length).toBeGreaterThanOrEqual(3);
      const latest = client.workflow.getHandle(h.workflowId);
      const view = await lineageView(client, image);
      expect(view.versions).toHaveLength(60);
      expect(Object.keys(view.tags)).toHaveLength(60);
      expect(view.historyEntries).toBe(120);
      // Began from a continued state and continued as new in turn: the replay test runs it.
      await saveHistory('lineageWorkflow-continued', client.workflow.getHandle(h.workflowId, runs[1]));
      await latest.terminate('test done');
    });
    await connection.close();
  });

  it('archives the older history on the control host before continuing as new; imgflow history shows all of it', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [CONTROL_QUEUE]: control } }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `lineage-${image}`,
        args: [{ image, maxHistoryEvents: 150, keepHistory: 20 }],
      });
      for (let i = 1; i <= 60; i++) {
        await h.executeUpdate(registerVersionUpdate, { args: [newVersion(i)] });
        await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: `v${i}`, name: `t${i}` }] });
      }
      const runs = await runsOf(client, h.workflowId, h.firstExecutionRunId);
      expect(runs.length).toBeGreaterThanOrEqual(3);
      // Each run handed on its newest 20 entries (or a few more, recorded while the archive was written).
      for (const carried of await carriedStates(client, h.workflowId, runs))
        expect(carried.history).toBeLessThanOrEqual(20 + 10);

      const latest = client.workflow.getHandle(h.workflowId);
      const { entries, archive } = await latest.query(historyQuery, {});
      expect(archive).toMatchObject({
        chain: h.firstExecutionRunId,
        host: 'control1',
        path: path.join(home, 'catalog', 'lineages', image, `${h.firstExecutionRunId}.jsonl`),
      });
      expect(archive!.count + entries.length).toBe(120);
      expect((await latest.query(describeQuery)).historyEntries).toBe(120);
      const lines = fs
        .readFileSync(archive!.path, 'utf8')
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as HistoryEntry);
      expect(seqs(lines)).toEqual(range(1, archive!.count));

      const all = await lineageHistory(client, image);
      expect(seqs(all)).toEqual(range(1, 120));
      expect(all.slice(0, 4).map((e) => [e.by, e.op, e.detail])).toEqual([
        ['alice', 'register', expect.stringMatching(/^v1 \(qcow2 1a+\): build 1$/)],
        ['alice', 'tag', 't1 -> v1'],
        ['alice', 'register', expect.stringMatching(/^v2 /)],
        ['alice', 'tag', 't2 -> v2'],
      ]);
      expect(seqs(await lineageHistory(client, image, 50))).toEqual(range(71, 120));
      expect(seqs(await lineageHistory(client, image, 5))).toEqual(range(116, 120));

      // The CLI, as an operator runs it on another machine: JSON for scripts, a table for people.
      const json = await cli('--json', 'history', image, '--limit', '500');
      expect(json.stderr).toBe('');
      expect((JSON.parse(json.stdout) as HistoryEntry[]).map((e) => [e.seq, e.op])).toEqual(
        all.map((e) => [e.seq, e.op]),
      );
      const table = await cli('history', image, '--last', '2');
      expect(table.stdout.trimEnd().split('\n')).toEqual([
        expect.stringMatching(/^SEQ\s+AT\s+BY\s+OP\s+DETAIL$/),
        expect.stringMatching(/^119\s+\S+Z\s+alice\s+register\s+v60 \(qcow2 60a+\): build 60$/),
        expect.stringMatching(/^120\s+\S+Z\s+alice\s+tag\s+t60 -> v60$/),
      ]);
      const bad = await cli('history', image, '--last', 'all');
      expect([bad.status, bad.stderr.trim()]).toEqual([
        2,
        'imgflow: --last: expected a whole number from 1 to 9007199254740991, got "all"',
      ]);

      // A page of the archive as the read workflow returns it: entries past throughSeq are not yet the lineage's.
      const page = await client.workflow.start(lineageHistoryWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `lineage-history-${image}`,
        args: [{ image, chain: archive!.chain, offset: 2, throughSeq: 4, limit: 10 }],
      });
      expect(seqs(await page.result())).toEqual([3, 4]);
      await saveHistory('lineageHistoryWorkflow', page);

      // An archive that went missing is said so, never shown as a shorter history.
      fs.renameSync(archive!.path, `${archive!.path}.lost`);
      await expect(lineageHistory(client, image)).rejects.toThrow(
        `the history archive of ${image} at control1:${archive!.path} holds 0 entries, its lineage counts ${archive!.count}`,
      );
      fs.renameSync(`${archive!.path}.lost`, archive!.path);

      // A run that began from a state with an archive and archived more: the replay test runs it.
      await saveHistory('lineageWorkflow-archived', client.workflow.getHandle(h.workflowId, runs[1]));
      await latest.terminate('test done');
    });
    await connection.close();
  });

  it('answers sized for a person: describe in brief, versions, tags and history a page at a time, the options checked at the edge', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [CONTROL_QUEUE]: control } }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `lineage-${image}`,
        args: [{ image, maxHistoryEvents: 150, keepHistory: 20 }],
      });
      const latest = client.workflow.getHandle(h.workflowId);
      for (let i = 1; i <= 60; i++) {
        await latest.executeUpdate(registerVersionUpdate, { args: [newVersion(i)] });
        await latest.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: `v${i}`, name: `t${i}` }] });
      }
      await latest.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: 't60', passed: true }] });
      await latest.executeUpdate(revokeUpdate, { args: [{ by: 'bob', version: 'v1', reason: 'CVE-2026-0003' }] });

      // describe: counts and the newest few, whatever the lineage's age.
      const summary = await latest.query(describeQuery);
      expect(summary.counts).toEqual({
        versions: 60,
        stored: 60,
        removed: 0,
        revoked: 1,
        tags: 60,
        tests: 1,
        passed: 1,
        packs: 0,
        volumes: 0,
      });
      expect(summary.latest.map((v) => v.id)).toEqual(['v56', 'v57', 'v58', 'v59', 'v60']);
      expect(summary.latest[0]).not.toHaveProperty('report');
      expect(summary.latestTags.map((t) => [t.name, t.version])).toEqual(range(56, 60).map((n) => [`t${n}`, `v${n}`]));
      expect(summary.historyEntries).toBe(122);

      // Versions and tags a page at a time, page 1 the newest, each page oldest first.
      const third = await latest.query(versionsQuery, { limit: 25, page: 3 });
      expect(third).toMatchObject({ page: 3, pages: 3, limit: 25, total: 60 });
      expect(third.versions.map((v) => v.id)).toEqual(range(1, 10).map((n) => `v${n}`));
      expect(third.versions[0]!.revoked?.reason).toBe('CVE-2026-0003');
      expect(third.tags).toEqual(Object.fromEntries(range(1, 10).map((n) => [`v${n}`, [`t${n}`]])));
      expect((await latest.query(versionsQuery, {})).versions).toHaveLength(50);
      expect((await latest.query(versionsQuery, { limit: 25, page: 4 })).versions).toEqual([]);
      const tags = await latest.query(tagsQuery, { limit: 2 });
      expect(tags.tags).toEqual([
        { name: 't59', version: 'v59', at: expect.any(String), by: 'alice' },
        {
          name: 't60',
          version: 'v60',
          at: expect.any(String),
          by: 'alice',
          test: expect.objectContaining({ passed: true }),
        },
      ]);
      await expect(latest.query(versionsQuery, { limit: 100_000 })).rejects.toThrow(
        'limit: expected a whole number from 1 to 500, got 100000',
      );
      expect((await latest.query(resolveQuery, { ref: 't7' }))?.id).toBe('v7');
      expect((await latest.query(resolveQuery, {}))?.id).toBe('v60');
      expect(await latest.query(resolveQuery, { ref: 'nope' })).toBeNull();

      // History pages span the archive and the state: together they are the whole history, in order.
      const { archive } = await latest.query(historyQuery, { last: 0 });
      expect(archive!.count).toBeGreaterThan(50);
      const pages = [];
      for (let page = 3; page >= 1; page--) pages.push(await lineageHistoryPage(client, image, { limit: 50, page }));
      expect(pages.map((p) => [p.page, p.pages, p.total, p.entries.length])).toEqual([
        [3, 3, 122, 22],
        [2, 3, 122, 50],
        [1, 3, 122, 50],
      ]);
      expect(seqs(pages.flatMap((p) => p.entries))).toEqual(range(1, 122));
      expect((await lineageHistoryPage(client, image, { limit: 50, page: 4 })).entries).toEqual([]);

      // The CLI: a page by default, --limit and --page, the footer on stderr, JSON the page's items.
      const listed = await cli('versions', image, '--limit', '25', '--page', '3');
      expect(listed.stdout.trimEnd().split('\n')).toHaveLength(11);
      expect(listed.stdout).toMatch(/^v1\s+\S+Z\s+alice\s+.*\s+t1\s+revoked: CVE-2026-0003\s+build 1$/m);
      expect(listed.stderr.trim()).toBe('page 3 of 3: versions 1-10 of 60, oldest first');
      const newest = JSON.parse((await cli('--json', 'versions', image, '--limit', '2')).stdout) as VersionRecord[];
      expect(newest.map((v) => v.id)).toEqual(['v59', 'v60']);
      const byDefault = await cli('--json', 'versions', image);
      expect((JSON.parse(byDefault.stdout) as VersionRecord[]).map((v) => v.id)).toEqual(
        range(11, 60).map((n) => `v${n}`),
      );
      expect(byDefault.stderr).toBe('');
      const history = await cli('--json', 'history', image, '--limit', '10', '--page', '2');
      expect(seqs(JSON.parse(history.stdout) as HistoryEntry[])).toEqual(range(103, 112));
      const tagTable = await cli('tags', image, '--limit', '1');
      expect(tagTable.stdout).toMatch(/^TAG\s+VERSION\s+AT\s+BY\nt60\s+v60\s+\S+Z\s+alice\n$/);
      expect(tagTable.stderr.trim()).toBe('page 1 of 60: tags 60-60 of 60, oldest first; --page 2 for older');
      const described = await cli('describe', image);
      expect(described.stdout).toMatch(/^versions\s+60 \(60 stored, 0 removed, 1 revoked\)$/m);
      expect(described.stdout).toMatch(/^history\s+122 entries$/m);
      expect(described.stdout).toMatch(/^v60\s+\S+Z\s+alice\s+ok\s+build 60$/m);
      expect(JSON.parse((await cli('--json', 'describe', image)).stdout)).toEqual(summary);
      for (const [args, error] of [
        [['versions', image, '--limit', '0'], 'imgflow: --limit: expected a whole number from 1 to 500, got "0"'],
        [['tags', image, '--limit', '501'], 'imgflow: --limit: expected a whole number from 1 to 500, got "501"'],
        [
          ['history', image, '--page', 'last'],
          'imgflow: --page: expected a whole number from 1 to 1000000, got "last"',
        ],
        [
          ['versions', image, '--page', '9'],
          'imgflow: --page: expected a page from 1 to 2 (60 versions at 50 a page), got "9"',
        ],
        [
          ['history', image, '--last', '5', '--limit', '5'],
          'imgflow: --last/--limit/--page: expected --last alone, or a page with --limit and --page',
        ],
        [
          ['report', `${image}:nope`],
          `imgflow: version: expected a version or tag of ${image} (60 versions, the newest v60; imgflow versions and imgflow tags list them), got "nope"`,
        ],
      ] as const) {
        const refused = await cli(...args);
        expect([refused.status, refused.stderr.trim()]).toEqual([2, error]);
      }
      await latest.terminate('test done');
    });
    await connection.close();
  });

  it('archives the full records of removed versions before continuing as new, only once the control host holds them; imgflow report shows them again', async () => {
    const nas = createNasRetentionActivities({ config: loadConfig({ home, host: 'nas1' }, {}) });
    const { client, connection } = await testClient();
    await withWorkers(
      { workflowQueue: WORKFLOW_QUEUE, activities: { [CONTROL_QUEUE]: control, 'nas.nas1': nas } },
      async () => {
        const image = uniqueQueue('img');
        const h = await client.workflow.start(lineageWorkflow, {
          taskQueue: WORKFLOW_QUEUE,
          workflowId: `lineage-${image}`,
          args: [{ image, maxHistoryEvents: 120 }],
        });
        const latest = client.workflow.getHandle(h.workflowId);
        for (let i = 1; i <= 30; i++) await latest.executeUpdate(registerVersionUpdate, { args: [newVersion(i)] });
        const before = await Promise.all(
          range(1, 30).map(async (n) => (await latest.query(versionQuery, `v${n}`)) as VersionRecord),
        );
        /** Cheap updates until the lineage continues as new once more. */
        const continued = async () => {
          const run = (await latest.describe()).runId;
          for (let n = 0; (await latest.describe()).runId === run; n++)
            await latest.executeUpdate(tagUpdate, {
              args: [{ by: 'alice', version: 'v30', name: `t-${run.slice(0, 8)}-${n}` }],
            });
        };

        // The archive cannot be written (its directory is a file): the records stay in full through the continue-as-new.
        const dir = path.join(home, 'catalog', 'lineages', image);
        fs.mkdirSync(path.dirname(dir), { recursive: true });
        fs.writeFileSync(dir, 'in the way\n');
        const gc = await latest.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 5 }] });
        expect(gc.removed).toEqual(range(1, 25).map((n) => `v${n}`));
        await continued();
        fs.rmSync(dir);
        await continued();

        const runs = await runsOf(client, h.workflowId, h.firstExecutionRunId);
        const carried = await carriedStates(client, h.workflowId, runs);
        const failed = carried.find((c) => c.state.versions.some((v) => v.removed))!;
        const archived = carried.at(-1)!;
        expect(failed.state.versions.filter(isStub)).toEqual([]);
        expect(failed.state.versionArchive).toBeUndefined();
        const file = path.join(dir, `${h.firstExecutionRunId}.versions.jsonl`);
        expect(archived.state.versionArchive).toEqual({
          chain: h.firstExecutionRunId,
          host: 'control1',
          path: file,
          count: 25,
        });
        const lines = fs
          .readFileSync(file, 'utf8')
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as { seq: number; record: VersionRecord });
        expect(lines.map((l) => [l.seq, l.record.id])).toEqual(range(1, 25).map((n) => [n, `v${n}`]));

        // The state keeps a stub of each removed version; describe lists them as before, without their files.
        const view = await lineageView(client, image);
        expect(view.versions.map((v) => [v.id, isStub(v)])).toEqual(range(1, 30).map((n) => [`v${n}`, n <= 25]));
        const removed = {
          reason: 'retention (newest 5 and referenced versions kept)',
          by: 'alice',
          at: expect.any(String),
        };
        expect(view.versions[2]).toEqual({
          id: 'v3',
          createdAt: before[2]!.createdAt,
          by: 'alice',
          message: 'build 3',
          arch: 'x86_64',
          os: 'debian-12',
          packages: 91,
          bytes: 200_000_003,
          removed,
          archived: true,
        });
        expect(await latest.query(versionQuery, 'v3')).toEqual(view.versions[2]);

        // What the continue-as-new carries per removed version: a stub, a fraction of the full record.
        const stubBytes = JSON.stringify(archived.state.versions.slice(0, 25)).length;
        const fullBytes = JSON.stringify(failed.state.versions.slice(0, 25)).length;
        expect(stubBytes).toBeLessThan(fullBytes / 3);
        // Smaller than before, though the lineage recorded more tags and history meanwhile.
        expect(archived.bytes).toBeLessThan(failed.bytes);

        // A removed version revoked after its record was archived: the stub's word on that wins.
        await latest.executeUpdate(revokeUpdate, { args: [{ by: 'bob', version: 'v2', reason: 'CVE-2026-0002' }] });

        // The full records come back through the client and the CLI, as they were before the stub.
        const v3 = view.versions[2]!;
        expect(await fullVersion(client, image, 'v3')).toEqual({ ...before[2], removed: v3.removed });
        const v2 = await fullVersion(client, image, 'v2');
        expect(v2).toEqual({
          ...before[1],
          removed: v2.removed,
          revoked: { by: 'bob', reason: 'CVE-2026-0002', at: expect.any(String) },
        });
        const json = await cli('--json', 'report', `${image}:v3`);
        expect(json.stderr).toBe('');
        expect(JSON.parse(json.stdout)).toEqual({ ...before[2], removed: v3.removed });
        const table = await cli('report', `${image}:v2`);
        expect(table.status).toBe(0);
        expect(table.stdout).toMatch(/^bootstrap\s/m);
        expect(table.stdout).toMatch(/^source\s+debootstrap bookworm$/m);
        expect(table.stdout).toMatch(/^builder\s+b1 \(build-2\)$/m);
        expect(table.stdout).toMatch(/^REVOKED\s+\S+Z by bob: CVE-2026-0002$/m);
        const listed = await cli('versions', image);
        expect(listed.stdout).toMatch(/^v1\s+\S+Z\s+alice\s+89\s+\S+ MiB\s+removed\s+build 1$/m);
        expect(listed.stdout).toMatch(/^v30\s+\S+Z\s+alice\s+118\s+\S+ MiB\s+qcow2\s+\S+\s+ok\s+build 30$/m);

        // A diff of a removed version says so: its manifests went with its files.
        const diffed = await cli('diff', image, 'v3', 'v30');
        expect([diffed.status, diffed.stderr.trim()]).toEqual([
          2,
          `imgflow: version: expected a stored version (v3 was removed by alice: ${removed.reason}), got "v3"`,
        ]);

        // The read workflow, as the client runs it; a version the archive does not hold is said so.
        const read = await client.workflow.start(lineageArchivedVersionWorkflow, {
          taskQueue: WORKFLOW_QUEUE,
          workflowId: `lineage-version-${image}`,
          args: [{ image, chain: h.firstExecutionRunId, version: 'v4' }],
        });
        expect(await read.result()).toEqual({ ...before[3], removed: view.versions[3]!.removed });
        await saveHistory('lineageArchivedVersionWorkflow', read);
        await expect(
          client.workflow.execute(lineageArchivedVersionWorkflow, {
            taskQueue: WORKFLOW_QUEUE,
            workflowId: `lineage-version-${image}-v30`,
            args: [{ image, chain: h.firstExecutionRunId, version: 'v30' }],
          }),
        ).rejects.toMatchObject({
          cause: {
            message: `the version archive of ${image} (chain ${h.firstExecutionRunId}) on the control host does not hold v30`,
          },
        });

        // The run that archived them, begun from a state holding them in full: the replay test runs it.
        await saveHistory('lineageWorkflow-versions', client.workflow.getHandle(h.workflowId, archived.run));
        await latest.terminate('test done');
      },
    );
    await connection.close();
  });

  it('keeps every tag, test result, channel and history entry through 5,000 operations and several continues-as-new', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [CONTROL_QUEUE]: control } }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `lineage-${image}`,
        args: [{ image, maxHistoryEvents: 2000 }],
      });
      const latest = client.workflow.getHandle(h.workflowId);
      // 8 at a time: the server allows 10 updates in flight per workflow.
      const send = <T>(n: number, op: (i: number) => Promise<T>) =>
        mapLimited(
          Array.from({ length: n }, (_, i) => i),
          8,
          op,
        );
      const registered = await send(100, (i) =>
        latest.executeUpdate(registerVersionUpdate, { args: [newVersion(i + 1)] }),
      );
      const ids = new Map(registered.map((v) => [v.message, v.id]));
      const versionOfTag = (t: number) => ids.get(`build ${(t % 100) + 1}`)!;
      await send(2000, (t) =>
        latest.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: versionOfTag(t), name: `t${t}` }] }),
      );
      await send(2000, (t) =>
        latest.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: `t${t}`, passed: t % 3 !== 0 }] }),
      );
      // Promotion i goes to test, stage or prod (gated: tags t_i with i % 3 == 2 passed their test).
      const channelOf = (i: number) => ['test', 'stage', 'prod'][i % 3]!;
      await send(900, (i) =>
        latest.executeUpdate(promoteUpdate, { args: [{ by: 'bob', tag: `t${i}`, channel: channelOf(i) }] }),
      );

      const runs = await runsOf(client, h.workflowId, h.firstExecutionRunId);
      expect(runs.length).toBeGreaterThanOrEqual(4);
      expect(runs.at(-1)).toBe((await latest.describe()).runId);

      const view = await lineageView(client, image);
      expect(new Map(view.versions.map((v) => [v.message, v.id]))).toEqual(ids);
      expect(view.versions.map((v) => v.id)).toEqual(Array.from({ length: 100 }, (_, i) => `v${i + 1}`));
      expect(Object.keys(view.tags)).toHaveLength(2000);
      for (let t = 0; t < 2000; t++) {
        expect(view.tags[`t${t}`]?.version).toBe(versionOfTag(t));
        expect(view.tests[`t${t}`]?.passed).toBe(t % 3 !== 0);
      }
      // The state holds the newest entries, the control host's archive the rest; imgflow history shows all, in order.
      const { entries, archive } = await latest.query(historyQuery, {});
      expect(archive!.count).toBeGreaterThan(0);
      expect(archive!.count + entries.length).toBe(5000);
      const history = await lineageHistory(client, image);
      expect(view.historyEntries).toBe(5000);
      expect(seqs(history)).toEqual(range(1, 5000));
      const count = (op: string) => history.filter((e) => e.op === op).length;
      expect([count('register'), count('tag'), count('test-result'), count('promote')]).toEqual([100, 2000, 2000, 900]);
      for (const channel of ['test', 'stage', 'prod']) {
        const promotions = history.filter((e) => e.op === 'promote' && e.detail.startsWith(`${channel} -> `));
        expect(view.channels[channel]?.entries).toBe(300);
        expect(promotions).toHaveLength(300);
        expect(
          `${channel} -> ${view.channels[channel]?.current?.tag} (${view.channels[channel]?.current?.version})`,
        ).toBe(promotions.at(-1)!.detail);
      }
      expect(seqs(await lineageHistory(client, image, 50))).toEqual(range(4951, 5000));
      expect(seqs(await lineageHistory(client, image, entries.length + 10))).toEqual(
        range(5000 - entries.length - 9, 5000),
      );

      // What each run handed to the next: never more history than the newest 500 and what arrived while
      // they were archived, so the input stays far from Temporal's 2 MB payload limit whatever the count of operations.
      const carried = await carriedStates(client, h.workflowId, runs);
      for (const c of carried) {
        expect(c.history).toBeLessThanOrEqual(DEFAULT_KEEP_HISTORY + 100);
        expect(c.historyBytes).toBeLessThan(100 * 1024);
        expect(c.bytes).toBeLessThan(1024 * 1024);
      }
      expect(carried.at(-1)!.archived).toBeGreaterThan(3000);
      await latest.terminate('test done');
    });
    await connection.close();
  }, 300_000);
});
