/** `pingWorkflow`: a host queue's worker answers with what it is; a missing one fails in bounded time. */
import { describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { createHostActivities } from '../../activities/host.js';
import { loadConfig } from '../../lib/config.js';
import { pingWorkflow } from '../../workflows/ping.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';

describe('ping', () => {
  const home = tempDir();

  it('gets the facts of the worker on the queue', async () => {
    const host = uniqueQueue('n');
    const config = loadConfig({ home, host }, {});
    const hostActivities = createHostActivities({
      role: 'nas',
      config,
      arch: 'x86_64',
      run: createRunner(memoryLogger().logger),
    });
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const facts = await withWorkers({ workflowQueue, activities: { [`nas.${host}`]: hostActivities } }, async () => {
      const handle = await client.workflow.start(pingWorkflow, {
        taskQueue: workflowQueue,
        workflowId: uniqueQueue('ping'),
        args: [{ queue: `nas.${host}` }],
      });
      const result = await handle.result();
      await saveHistory('pingWorkflow', handle);
      return result;
    });
    await connection.close();
    expect(facts).toMatchObject({ host, role: 'nas', arch: 'x86_64', pid: process.pid });
    expect(facts.qemuImg).toMatch(/^qemu-img version \d+\.\d+/);
  });

  it('fails within the wait when nothing polls the queue', async () => {
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const started = Date.now();
    const error = await withWorkers({ workflowQueue }, () =>
      client.workflow
        .execute(pingWorkflow, {
          taskQueue: workflowQueue,
          workflowId: uniqueQueue('ping'),
          args: [{ queue: 'nas.nobody', waitSeconds: 1 }],
        })
        .catch((e: unknown) => e),
    );
    await connection.close();
    expect(error).toBeInstanceOf(Error);
    expect(Date.now() - started).toBeLessThan(30_000);
  });
});
