/**
 * The real `imgflow worker` process: it polls its role's queue, serves Prometheus metrics, logs
 * JSON lines through pino (Temporal's own logs included), and drains then exits on SIGTERM.
 */
import { temporal } from '@temporalio/proto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { killGroup } from '../support/processes.js';
import { NAMESPACE, testClient, uniqueQueue } from '../support/temporal.js';
import { freePort } from '../support/ports.js';
import { until } from '../support/wait.js';

describe('imgflow worker process', () => {
  const home = tempDir();
  let pid: number | undefined;
  afterAll(() => killGroup(pid));

  it('serves metrics, answers on its queue, and drains on SIGTERM with exit 0', async () => {
    const port = await freePort();
    const host = uniqueQueue('c');
    const child = spawnImgflow(
      [
        '--address',
        inject('temporalAddress'),
        '--namespace',
        NAMESPACE,
        '--home',
        home,
        'worker',
        '--role',
        'compute',
        '--host',
        host,
        '--metrics',
        `127.0.0.1:${port}`,
      ],
      { IMGFLOW_LOG_PRETTY: '0' },
    );
    pid = child.pid;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

    const metrics = await until('metrics', async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      const text = await res.text();
      return /temporal_/.test(text) ? text : undefined;
    });
    expect(metrics).toMatch(/temporal_worker_start|temporal_num_pollers|temporal_/);

    // The worker polls its role's queue under an identity naming role, host and process.
    const { connection } = await testClient();
    const identities = await until('a poller on the compute queue', async () => {
      const { pollers } = await connection.workflowService.describeTaskQueue({
        namespace: NAMESPACE,
        taskQueue: { name: `compute.${host}` },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
      return pollers?.length ? pollers.map((p) => p.identity) : undefined;
    });
    expect(identities).toContain(`compute@${host}:${child.pid}`);
    await connection.close();

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; component?: string });
    expect(lines.map((l) => l.msg)).toContain('worker started');
    expect(lines.map((l) => l.msg)).toContain('worker drained and stopped');
    expect(lines.some((l) => l.component === 'temporal')).toBe(true);
  });
});
