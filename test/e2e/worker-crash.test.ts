/**
 * A NAS worker process is killed (SIGKILL) while its activity runs a command; a new worker takes
 * over: the workflow completes, the base lands in the store exactly once, the dead worker's
 * command is ended and nothing partial is left behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createRunner } from '../../activities/runner.js';
import { queues } from '../../common/queues.js';
import { loadConfig } from '../../lib/config.js';
import { demoWorkflow } from '../../workflows/demo.js';
import { spawnWorker } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { alive, killGroup } from '../support/processes.js';
import { findOnPath } from '../../lib/which.js';
import { until } from '../support/wait.js';

describe('worker killed in the middle of an activity', () => {
  requireTools('qemu-img', 'qemu-io', 'rsync');
  const home = tempDir();
  const shims = tempDir();
  const calls = path.join(shims, 'rsync-calls');
  // A slow rsync, so the kill lands while the transfer runs; it logs each start.
  fs.writeFileSync(
    path.join(shims, 'rsync'),
    `#!/bin/sh\necho $$ >> ${calls}\nsleep 4\nexec ${findOnPath('rsync')} "$@"\n`,
    { mode: 0o755 },
  );
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => killGroup(c.pid)));

  it('finishes on a new worker with the side effect done exactly once', async () => {
    const nasHost = uniqueQueue('nas');
    const config = loadConfig({ home, host: nasHost }, {});
    const startNasWorker = () => {
      const child = spawnWorker({ home, role: 'nas', host: nasHost, env: { PATH: `${shims}:${process.env.PATH}` } });
      children.push(child);
      return child;
    };
    const workflowQueue = uniqueQueue('wf');
    const { client, connection } = await testClient();
    const run = createRunner(memoryLogger().logger);

    const summary = await withWorkers(
      { workflowQueue, activities: { [queues.builder('x86_64')]: createBuilderActivities({ run, config }) } },
      async () => {
        const first = startNasWorker();
        const handle = await client.workflow.start(demoWorkflow, {
          taskQueue: workflowQueue,
          workflowId: uniqueQueue('crash'),
          args: [{ image: 'crash-base', volume: 'vm-1', arch: 'x86_64', nas: nasHost, sizeMiB: 16 }],
        });
        await until('the transfer to start on the first worker', () => fs.existsSync(calls));
        const orphan = Number(fs.readFileSync(calls, 'utf8').trim());
        process.kill(first.pid!, 'SIGKILL');

        startNasWorker();
        const result = await handle.result();
        // The new worker ended the transfer the dead one had left running.
        expect(alive(orphan)).toBe(false);
        const history = await handle.fetchHistory();
        const attempts = history
          .events!.filter((e) => e.activityTaskStartedEventAttributes)
          .map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 0);
        expect(Math.max(...attempts)).toBe(2);
        return result;
      },
    );
    await connection.close();

    expect(summary.volume.readsThrough).toBe(true);
    const stored = fs.readdirSync(path.join(home, 'nas', nasHost, 'store', 'crash-base', summary.version));
    expect(stored).toEqual([`crash-base-${summary.version}.qcow2`]);
    expect(fs.readFileSync(calls, 'utf8').trim().split('\n')).toHaveLength(2);
  });
});
