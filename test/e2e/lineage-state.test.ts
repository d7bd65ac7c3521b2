/**
 * A lineage never loses its state: free text is bounded before it enters history; a state that
 * grows toward Temporal's payload limit sheds to the archive and continues as new, and past its
 * refusal bound refuses growth while gc still runs; a lineage that ended without handing on its
 * state (terminated, as the server does to a run it cannot continue) is started again from what
 * its last run holds, or the request is refused and nothing starts.
 */
import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { createLineageHistoryActivities } from '../../activities/control/lineage-history.js';
import { jsonBytes, TEXT_LIMITS } from '../../common/limits.js';
import { CONTROL_QUEUE, WORKFLOW_QUEUE } from '../../common/queues.js';
import { lineageHandle, lineageHistory, lineageView, updateLineage } from '../../starters/lineage-client.js';
import {
  describeQuery,
  gcUpdate,
  promoteUpdate,
  registerVersionUpdate,
  requestBuildUpdate,
  revokeUpdate,
  rollbackUpdate,
  stateQuery,
  tagUpdate,
  testResultUpdate,
} from '../../workflows/lineage/messages.js';
import { lineageWorkflow } from '../../workflows/lineage/workflow.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { expectRejected, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { newVersion } from '../support/versions.js';

const huge = 'x'.repeat(130_000);

/** How many runs the lineage has had, following its continues-as-new. */
async function runCount(client: Client, workflowId: string, firstRunId: string): Promise<number> {
  let runs = 1;
  for (let run = firstRunId; ; runs++) {
    const last = (await client.workflow.getHandle(workflowId, run).fetchHistory()).events!.at(-1)!;
    const next = last.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
    if (!next) return runs;
    run = next;
  }
}

describe('lineage state', () => {
  const home = tempDir();
  const control = createLineageHistoryActivities({ config: { home, host: 'control1' } });

  it('refuses free text past its bound in every field, in one short line, without touching history', async () => {
    const taskQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: taskQueue }, async () => {
      const image = uniqueQueue('img');
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue,
        workflowId: `lineage-${image}`,
        args: [{ image }],
      });
      await h.executeUpdate(registerVersionUpdate, { args: [newVersion(1)] });
      await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', name: 't1' }] });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 't1', channel: 'test' }] });
      const tooLong = /expected a \w+ of 1-\d+ characters, got "x{20,}\.\.\. \(130000 characters\)/;

      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 't1', channel: 'test', reason: huge }] }),
        tooLong,
      );
      await expectRejected(
        h,
        () =>
          h.executeUpdate(promoteUpdate, {
            args: [{ by: 'alice', tag: 't1', channel: 'prod', force: true, reason: huge }],
          }),
        tooLong,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(rollbackUpdate, { args: [{ by: 'alice', channel: 'test', reason: huge }] }),
        tooLong,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(revokeUpdate, { args: [{ by: 'alice', version: 'v1', reason: huge }] }),
        tooLong,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(testResultUpdate, { args: [{ by: 'ci', tag: 't1', passed: true, note: huge }] }),
        /note: expected at most 500 characters/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(registerVersionUpdate, { args: [{ ...newVersion(2), message: huge }] }),
        /message: expected a message of 1-1000 characters/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 't1', channel: 'test', reason: '   ' }] }),
        /reason: expected a reason of 1-500/,
      );
      const build = { recipe: { image }, recipeDigest: 'd'.repeat(64), by: 'alice', message: huge, store: 'nas1' };
      await expectRejected(
        h,
        () => h.executeUpdate(requestBuildUpdate, { args: [build as never] }),
        /message: expected a message of 1-1000/,
      );

      const error = (await h
        .executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 't1', channel: 'test', reason: huge }] })
        .catch((e: Error) => e)) as Error & { cause: Error };
      expect(error.cause.message).toMatch(/^reason: expected a reason of 1-500 characters/);
      expect(error.cause.message.length).toBeLessThan(300);
      expect(error.cause.message).not.toContain('\n');
      // Identical promotions at once record one entry.
      const [first, second] = await Promise.all(
        [0, 1].map(() => h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 't1', channel: 'staging' }] })),
      );
      expect(second).toEqual(first);
      expect((await h.query(describeQuery)).channels.staging?.entries).toBe(1);
      // A reason at the bound is accepted and kept whole.
      const entry = await h.executeUpdate(promoteUpdate, {
        args: [{ by: 'alice', tag: 't1', channel: 'qa', reason: 'r'.repeat(TEXT_LIMITS.reason) }],
      });
      expect(entry.reason).toHaveLength(TEXT_LIMITS.reason);
      await h.terminate('test done');
    });
    await connection.close();
  });

  it('sheds to the archive before its bound, then refuses growth at the refusal bound while gc still runs', async () => {
    const { client, connection } = await testClient();
    const taskQueue = uniqueQueue('wf');
    // WORKFLOW_QUEUE's archive reads (imgflow history) run as workflows of their own.
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [CONTROL_QUEUE]: control } }, async () => {
      await withWorkers({ workflowQueue: taskQueue }, async () => {
        const image = uniqueQueue('img');
        const budget = { shedAt: 48_000, refuseAt: 64_000 };
        const h = await client.workflow.start(lineageWorkflow, {
          taskQueue,
          workflowId: `lineage-${image}`,
          args: [{ image, budget }],
        });
        await h.executeUpdate(registerVersionUpdate, { args: [newVersion(1)] });
        await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', name: 't1' }] });
        await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', name: 't2' }] });
        const latest = client.workflow.getHandle(h.workflowId);
        const reason = 'p'.repeat(TEXT_LIMITS.reason);

        let promoted = 0;
        let refusal: Error | undefined;
        while (!refusal && promoted < 400) {
          // Two tags in turn: each promotion is a change (the same one twice records nothing).
          refusal = await latest
            .executeUpdate(promoteUpdate, {
              args: [{ by: 'alice', tag: `t${(promoted % 2) + 1}`, channel: 'test', reason }],
            })
            .then(
              () => void promoted++,
              (e: Error) => e,
            );
        }
        expect((refusal as Error & { cause?: Error })?.cause?.message).toMatch(
          /state: expected the lineage of .* to have room below 64000 bytes \(it holds \d+, near Temporal's 2097152-byte payload limit; remove or gc/,
        );
        expect(await runCount(client, h.workflowId, h.firstExecutionRunId)).toBeGreaterThanOrEqual(2);

        // Past the refusal bound by one change at most: what it hands on always fits.
        const state = await latest.query(stateQuery);
        expect(jsonBytes(state)).toBeLessThan(budget.refuseAt + 2_000);
        expect(state.archive?.count).toBeGreaterThan(0);
        expect(state.channels.test!.length).toBeLessThanOrEqual(100 + 10);
        // Nothing was lost: every promotion is in the history, archived or not.
        const history = await lineageHistory(client, image);
        expect(history.filter((e) => e.op === 'promote')).toHaveLength(promoted);
        expect(history.map((e) => e.seq)).toEqual(Array.from({ length: history.length }, (_, i) => i + 1));

        // The first run shed and continued as new: the replay test runs it.
        await saveHistory('lineageWorkflow-shed', client.workflow.getHandle(h.workflowId, h.firstExecutionRunId));
        const gc = await latest.executeUpdate(gcUpdate, { args: [{ by: 'alice', dryRun: true }] });
        expect(gc.kept.map((k) => k.version)).toEqual(['v1']);
        expect((await latest.describe()).status.name).toBe('RUNNING');
        await latest.terminate('test done');
      });
    });
    await connection.close();
  });

  it('starts a lineage that ended without handing on its state again from its last run, never empty', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE }, async () => {
      const image = uniqueQueue('img');
      await updateLineage(client, image, registerVersionUpdate, newVersion(1));
      await updateLineage(client, image, tagUpdate, { by: 'alice', name: 'first' });
      await updateLineage(client, image, promoteUpdate, {
        by: 'alice',
        tag: 'first',
        channel: 'test',
        reason: 'smoke test',
      });
      const ended = await lineageHandle(client, image).describe();
      await lineageHandle(client, image).terminate('payload too large (as the server ends a run it cannot continue)');

      const tag = await updateLineage(client, image, tagUpdate, { by: 'bob', name: 'second' });
      expect(tag).toMatchObject({ name: 'second', version: 'v1' });
      const now = await lineageHandle(client, image).describe();
      expect(now.runId).not.toBe(ended.runId);
      const view = await lineageView(client, image);
      expect(view.versions.map((v) => v.id)).toEqual(['v1']);
      expect(Object.keys(view.tags).sort()).toEqual(['first', 'second']);
      expect(view.channels.test?.current).toMatchObject({ tag: 'first', reason: 'smoke test' });
      const history = await lineageHistory(client, image);
      expect(history.map((e) => e.op)).toEqual(['register', 'tag', 'promote', 'recovered', 'tag']);
      expect(history[3]!.detail).toContain(`run ${ended.runId}, which ended TERMINATED`);
      await lineageHandle(client, image).terminate('test done');
      await saveHistory('lineageWorkflow-recovered', lineageHandle(client, image));
    });
    await connection.close();
  });

  it('refuses, starting nothing, when the last run cannot be read back', async () => {
    const { client, connection } = await testClient();
    const image = uniqueQueue('img');
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE }, async () => {
      await updateLineage(client, image, registerVersionUpdate, newVersion(1));
      await lineageHandle(client, image).terminate('gone');
    });
    const ended = await lineageHandle(client, image).describe();
    // No worker can replay it now.
    const error = await updateLineage(client, image, tagUpdate, { by: 'bob' }).catch((e: Error) => e);
    expect((error as Error).message).toMatch(
      new RegExp(
        `the lineage of ${image} ended TERMINATED at .* without handing on its state, and its last run \\(${ended.runId}\\) could not be read back within 10 s: .*nothing was started`,
      ),
    );
    const after = await lineageHandle(client, image).describe();
    expect(after.runId).toBe(ended.runId);
    expect(after.status.name).toBe('TERMINATED');
    await connection.close();
  });
});
