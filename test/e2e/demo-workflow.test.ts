/**
 * The demo workflow on real tools: a base built on the builder queue, imported and cloned on the
 * NAS queue, the clone read through to the base.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import { queues } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { loadConfig } from '../../lib/config.js';
import { demoWorkflow } from '../../workflows/demo.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

describe('demo workflow', () => {
  requireTools('qemu-img', 'qemu-io', 'rsync');
  const home = tempDir();

  it('builds on one host queue, clones on another, and the clone reads through to the base', async () => {
    const nasHost = uniqueQueue('nas');
    const config = loadConfig({ home, host: nasHost }, {});
    const run = createRunner(memoryLogger().logger);
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const summary = await withWorkers(
      {
        workflowQueue,
        activities: {
          [queues.builder('x86_64')]: createBuilderActivities({ run, config }),
          [queues.nas(nasHost)]: createNasActivities({ run, config }),
        },
      },
      async () => {
        const handle = await client.workflow.start(demoWorkflow, {
          taskQueue: workflowQueue,
          workflowId: uniqueQueue('demo'),
          args: [{ image: 'demo-base', volume: 'vm-1', arch: 'x86_64', nas: nasHost, sizeMiB: 16 }],
          typedSearchAttributes: [{ key: SA.kind, value: 'demo' }],
        });
        const result = await handle.result();
        await saveHistory('demoWorkflow', handle);
        const described = await handle.describe();
        expect(described.typedSearchAttributes.get(SA.version)).toBe(result.version);
        return result;
      },
    );
    await connection.close();

    expect(summary.volume.readsThrough).toBe(true);
    expect(summary.volume.backingFile).toBe(summary.base.path);
    expect(summary.base.virtualBytes).toBe(16 * 1024 * 1024);
    expect(summary.base.path.startsWith(path.join(home, 'nas', nasHost, 'store', 'demo-base'))).toBe(true);
    // The clone holds only its own metadata: copy-on-write, not a copy.
    expect(summary.volume.actualBytes).toBeLessThan(summary.base.bytes);
    expect(fs.statSync(summary.base.path).mode & 0o222).toBe(0);
  });

  it('fails within its bounded wait when no builder for the arch is running, instead of waiting forever', async () => {
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const error = await withWorkers({ workflowQueue }, async () =>
      client.workflow
        .execute(demoWorkflow, {
          taskQueue: workflowQueue,
          workflowId: uniqueQueue('demo'),
          args: [
            { image: 'demo-base', volume: 'vm-2', arch: 's390x', nas: 'nowhere', sizeMiB: 16, workerWaitSeconds: 2 },
          ],
        })
        .catch((e: unknown) => e),
    );
    await connection.close();
    const activityFailure = (error as Error & { cause?: Error & { cause?: Error } }).cause;
    expect(String(activityFailure?.cause?.message)).toMatch(/schedule.?to.?start/i);
  });
});
