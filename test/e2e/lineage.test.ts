/**
 * The lineage entity workflow on a real server: versions, tags, channels, gated promotion,
 * rollback, revocation; bad requests rejected by validators without touching history; state
 * intact across continue-as-new.
 */
import { describe, expect, it } from 'vitest';
import { SA } from '../../common/search-attributes.js';
import {
  describeQuery,
  historyQuery,
  lineageWorkflow,
  promoteUpdate,
  registerVersionUpdate,
  revokeUpdate,
  rollbackUpdate,
  tagUpdate,
  testResultSignal,
  testResultUpdate,
} from '../../workflows/lineage.js';
import { saveHistory } from '../support/histories.js';
import { testClient, uniqueQueue, withWorkers, expectRejected } from '../support/temporal.js';
import { newVersion } from '../support/versions.js';

describe('lineage workflow', () => {
  it('tags, promotes through a gated channel, rolls back and revokes, rejecting bad requests', async () => {
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, { taskQueue, workflowId: `lineage-${image}`, args: [{ image }] });
      const v1 = await h.executeUpdate(registerVersionUpdate, { args: [newVersion(1)] });
      const v2 = await h.executeUpdate(registerVersionUpdate, { args: [newVersion(2)] });
      expect([v1.id, v2.id]).toEqual(['v1', 'v2']);

      const auto = await h.executeUpdate(tagUpdate, { args: [{ by: 'alice' }] });
      expect(auto.name).toMatch(/^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-RELEASE-by-alice$/);
      expect(auto.version).toBe('v2');
      await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v1', name: 'first' }] });

      await expectRejected(h, () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v2', name: 'first' }] }), /name: expected a tag name not yet used/);
      await expectRejected(h, () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v9' }] }), /version: expected a version of/);
      await expectRejected(h, () => h.executeUpdate(tagUpdate, { args: [{ by: 'alice', name: '../etc' }] }), /name: expected a tag of/);
      await expectRejected(h, () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'nope', channel: 'test' }] }), /tag: expected a tag of/);

      // test is not gated; prod needs a passed test result (or --force with a reason).
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'test' }] });
      await expectRejected(h, () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'prod' }] }), /passed test result.*gated channel prod/);
      await h.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: 'first', passed: true, note: 'booted node c1' }] });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'prod' }] });
      await expectRejected(h, () => h.executeUpdate(rollbackUpdate, { args: [{ by: 'alice', channel: 'prod' }] }), /earlier entry to roll back to/);
      await expectRejected(h, () => h.executeUpdate(rollbackUpdate, { args: [{ by: 'alice', channel: 'staging' }] }), /no history/);

      // A test result by signal, as a CI job would send it.
      await h.signal(testResultSignal, { by: 'ci', tag: auto.name, passed: true });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'bob', tag: auto.name, channel: 'prod' }] });
      const back = await h.executeUpdate(rollbackUpdate, { args: [{ by: 'bob', channel: 'prod', reason: 'kernel panic on c7' }] });
      expect(back).toMatchObject({ version: 'v1', tag: 'first', action: 'rollback', by: 'bob' });

      await h.executeUpdate(revokeUpdate, { args: [{ by: 'alice', version: 'v1', reason: 'CVE-2026-0001' }] });
      await expectRejected(h, () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'test' }] }), /revoked by alice: CVE-2026-0001/);
      await expectRejected(h, () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: auto.name, channel: 'prod', force: true }] }), /reason: expected a reason/);
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: auto.name, channel: 'prod', force: true, reason: 'hotfix' }] });

      const view = await h.query(describeQuery);
      expect(view.channels.prod).toMatchObject({ current: { version: 'v2', forced: true, reason: 'hotfix' }, entries: 4 });
      expect(view.channels.test?.current?.version).toBe('v1');
      expect(view.versions.find((v) => v.id === 'v1')?.revoked?.reason).toBe('CVE-2026-0001');
      const history = await h.query(historyQuery, {});
      expect(history.map((e) => e.op)).toEqual([
        'register', 'register', 'tag', 'tag', 'promote', 'test-result', 'promote', 'test-result', 'promote', 'rollback', 'revoke', 'promote',
      ]);
      const described = await h.describe();
      expect(described.typedSearchAttributes.get(SA.image)).toBe(image);
      expect(described.typedSearchAttributes.get(SA.channels)).toEqual(expect.arrayContaining([`prod=${auto.name}`, 'test=first']));
      await h.terminate('test done');
      await saveHistory('lineageWorkflow', h);
    });
    await connection.close();
  });

  it('continues as new under many operations with all state intact', async () => {
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, { taskQueue, workflowId: `lineage-${image}`, args: [{ image, maxHistoryEvents: 150 }] });
      const firstRun = (await h.describe()).runId;
      for (let i = 1; i <= 60; i++) {
        await h.executeUpdate(registerVersionUpdate, { args: [newVersion(i)] });
        await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: `v${i}`, name: `t${i}` }] });
      }
      const latest = client.workflow.getHandle(h.workflowId);
      expect((await latest.describe()).runId).not.toBe(firstRun);
      const view = await latest.query(describeQuery);
      expect(view.versions).toHaveLength(60);
      expect(Object.keys(view.tags)).toHaveLength(60);
      expect(view.historyEntries).toBe(120);
      await latest.terminate('test done');
    });
    await connection.close();
  });
});
