/**
 * Clone-to-compute when things fail, with real worker processes (`imgflow worker`):
 * - a NAS worker killed (SIGKILL) after the clone is made and before the export: a new worker
 *   finishes the map from where it stood;
 * - a compute worker killed during attach and started again: the map ends mapped, with one clone
 *   and one target open to that host only;
 * - the Temporal server (a dev server of this test's own) killed in the middle of a map and
 *   started again on the same database: the map ends mapped;
 * - a sync pull that fails (the node's copy is gone from its pool): retried, shown as failed with
 *   its reason, never as a success, the last good sync kept; it recovers once the copy is back.
 * Each ends with unmap and delete, and the NAS (and node) hold exactly what they held before.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createPipe } from '../../activities/drivers/pipe.js';
import { parseTgtShow } from '../../activities/drivers/export/tgt.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { loadConfig, nasSettings } from '../../lib/config.js';
import { findOnPath } from '../../lib/which.js';
import { hasWorker } from '../../starters/answers.js';
import {
  deleteUpdate,
  mapUpdate,
  unmapUpdate,
  volumeQuery,
  volumeWorkflowId,
  type MapRequest,
  type VolumeView,
} from '../../workflows/volume/messages.js';
import { volumeWorkflow } from '../../workflows/volume/workflow.js';
import { logLines, spawnWorker, imgflowAt } from '../support/cli.js';
import { throwawayPool, useTgtd, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { alive, killGroup } from '../support/processes.js';
import {
  NAMESPACE,
  ownDevServer,
  testClient,
  testDataConverter,
  uniqueQueue,
  withWorkers,
} from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

const MiB = 1024 * 1024;

// Once for the file: a daemon is released when the suite that asked for it ends.
useZfsFuse();
useTgtd();

/**
 * A stand-in for `tool` on a worker's PATH: its first call whose arguments match the shell
 * pattern writes its pid to `marker` and waits (`sleep 30`, or until `release` exists) before
 * running the real tool; every other call runs the real tool at once.
 */
function stallingShim(dir: string, tool: string, pattern: string, marker: string, release?: string): void {
  const wait = release ? `while [ ! -e ${release} ]; do sleep 0.2; done` : 'sleep 30';
  fs.writeFileSync(
    path.join(dir, tool),
    `#!/bin/sh\ncase "$*" in ${pattern}) if [ ! -e ${marker} ]; then echo $$ > ${marker}; ${wait}; fi;; esac\nexec ${findOnPath(tool)} "$@"\n`,
    { mode: 0o755 },
  );
}

function mapRequest(o: {
  image: string;
  nas: string;
  node: string;
  file: string;
  format: 'qcow2' | 'raw';
  sync?: boolean;
}): MapRequest {
  return {
    by: 'alice',
    base: { image: o.image, version: 'v1', artifact: { format: o.format, host: o.nas, path: o.file } },
    nas: o.nas,
    computeHost: o.node,
    waitSeconds: 120,
    ...(o.sync ? { sync: true, frequencySeconds: 3600 } : {}),
  };
}

async function startVolume(client: Client, volume: string) {
  return client.workflow.start(volumeWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: volumeWorkflowId(volume),
    args: [{ volume }],
    typedSearchAttributes: [{ key: SA.kind, value: 'volume' }],
  });
}

/** How many times each activity type was scheduled, and the most attempts any of its runs took. */
async function activityRuns(
  handle: WorkflowHandle,
): Promise<Record<string, { scheduled: number; maxAttempt: number }>> {
  const runs: Record<string, { scheduled: number; maxAttempt: number }> = {};
  const typeOf = new Map<string, string>();
  for (const e of (await handle.fetchHistory()).events ?? []) {
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (scheduled) {
      const type = scheduled.activityType!.name!;
      typeOf.set(String(e.eventId), type);
      runs[type] = { scheduled: (runs[type]?.scheduled ?? 0) + 1, maxAttempt: runs[type]?.maxAttempt ?? 0 };
    }
    const started = e.activityTaskStartedEventAttributes;
    if (started) {
      const run = runs[typeOf.get(String(started.scheduledEventId))!]!;
      run.maxAttempt = Math.max(run.maxAttempt, started.attempt ?? 1);
    }
  }
  return runs;
}

describe('NAS worker killed between clone and export', () => {
  requireTools('qemu-img', 'qemu-io');
  const home = tempDir('imgflow-vol-faults-');
  const shims = tempDir('imgflow-vol-shims-');
  const calls = path.join(shims, 'info-calls');
  // The first look at the new clone (right after it is made, before the activity returns) stalls,
  // so the kill lands with the clone on disk and the export not begun.
  stallingShim(shims, 'qemu-img', '*info*/volumes/vm-9.qcow2*', calls);
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => killGroup(c.pid)));

  it('ends mapped with one clone, and leaks nothing after unmap and delete', async () => {
    const nasHost = uniqueQueue('nas');
    const nodeHost = uniqueQueue('node');
    const image = `vf${nasHost.slice(-6)}`;
    const run = createRunner(memoryLogger().logger);
    const nasConfig = loadConfig({ home, host: nasHost }, {});
    const nodeConfig = loadConfig({ home, host: nodeHost }, {});
    // The same drivers the worker process uses, to count what the NAS holds.
    const nas = createNasVolumeActivities({ run, config: nasConfig });
    const volumesDir = path.join(home, 'nas', nasHost, 'volumes');
    const startNasWorker = () => {
      const child = spawnWorker({ home, role: 'nas', host: nasHost, env: { PATH: `${shims}:${process.env.PATH}` } });
      logLines(child);
      children.push(child);
      return child;
    };

    const { client, connection } = await testClient();
    await withWorkers(
      {
        workflowQueue: WORKFLOW_QUEUE,
        activities: { [queues.compute(nodeHost)]: createComputeActivities({ run, config: nodeConfig }) },
      },
      async () => {
        const file = await storeVersion(client, run, {
          home,
          nas: nasHost,
          image,
          format: 'qcow2',
          mib: 32,
          writable: true,
        });
        const before = await nas.volumeList();
        expect(before).toEqual({ volumes: [], exports: [] });

        const first = startNasWorker();
        const handle = await startVolume(client, 'vm-9');
        const mapped = handle.executeUpdate(mapUpdate, {
          args: [mapRequest({ image, nas: nasHost, node: nodeHost, file, format: 'qcow2' })],
        });
        await until('the clone to be made on the first worker', () => fs.existsSync(calls));
        const stalled = Number(fs.readFileSync(calls, 'utf8').trim());
        expect(fs.readdirSync(volumesDir)).toEqual(['vm-9.qcow2']);
        expect((await handle.query(volumeQuery)).phase).toBe('mapping');
        process.kill(first.pid!, 'SIGKILL');

        startNasWorker();
        const result = await mapped;
        expect(result).toMatchObject({ phase: 'mapped', target: path.join(volumesDir, 'vm-9.qcow2'), changed: true });
        // The new worker ended the command the dead one had left running.
        expect(alive(stalled)).toBe(false);
        expect(fs.readdirSync(volumesDir)).toEqual(['vm-9.qcow2']);
        const clones = (await activityRuns(handle)).volumeCloneExport!;
        expect(clones.scheduled).toBe(1);
        expect(clones.maxAttempt).toBeGreaterThan(1);

        await handle.executeUpdate(unmapUpdate, { args: [{ by: 'alice' }] });
        // Unmap keeps the clone (with no exporter, a stored volume is listed as usable in place).
        expect((await nas.volumeList()).volumes).toEqual(['vm-9']);
        await handle.executeUpdate(deleteUpdate, { args: [{ by: 'alice' }] });
        expect(await nas.volumeList()).toEqual(before);
        expect(fs.readdirSync(volumesDir)).toEqual([]);
      },
    );
    await connection.close();
  }, 180_000);
});

describe('compute worker killed during attach', () => {
  requireTools('qemu-img', 'qemu-io', 'iscsi-readcapacity16');
  const dir = tempDir('imgflow-vol-attach-');
  const nasPool = throwawayPool(dir);
  const home = path.join(dir, 'home');
  const shims = path.join(dir, 'shims');
  fs.mkdirSync(shims);
  const started = path.join(shims, 'attach-started');
  // The first read of the exported volume's capacity (the iSCSI direct attach) stalls, so the kill
  // lands with the clone exported and the attach under way.
  stallingShim(shims, 'iscsi-readcapacity16', '*.vm-a/1*', started);
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => killGroup(c.pid)));

  it('ends mapped once the worker is back: one clone, one target for that host only, nothing leaked', async () => {
    const nasHost = uniqueQueue('nas');
    const nodeHost = uniqueQueue('node');
    const image = `va${nasHost.slice(-6)}`;
    const { logger } = memoryLogger();
    const run = createRunner(logger);
    const nasConfig = loadConfig({ home, host: nasHost }, {});
    const nas = createNasVolumeActivities({
      run,
      config: nasConfig,
      pipe: createPipe(logger),
      settings: nasSettings({ IMGFLOW_NAS_POOL: `${nasPool.name}/imgflow`, IMGFLOW_NAS_EXPORT: 'tgt' }),
    });
    // This NAS's targets only: other test files share tgtd.
    const targets = async () =>
      parseTgtShow((await run(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target'])).stdout).filter((t) =>
        t.iqn.includes(`:${nasHost}.`),
      );
    const startComputeWorker = () => {
      const child = spawnWorker({
        home,
        role: 'compute',
        host: nodeHost,
        env: { PATH: `${shims}:${process.env.PATH}` },
      });
      logLines(child);
      children.push(child);
      return child;
    };
    const url = `iscsi://127.0.0.1/iqn.2026-01.org.imgflow:${nasHost}.vm-a/1`;

    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [queues.nas(nasHost)]: nas } }, async () => {
      const file = await storeVersion(client, run, {
        home,
        nas: nasHost,
        image,
        format: 'raw',
        mib: 32,
        writable: true,
      });
      const before = { targets: await targets(), stored: await nas.volumeList() };
      expect(before).toEqual({ targets: [], stored: { volumes: [], exports: [] } });

      const first = startComputeWorker();
      const handle = await startVolume(client, 'vm-a');
      const mapped = handle.executeUpdate(mapUpdate, {
        args: [mapRequest({ image, nas: nasHost, node: nodeHost, file, format: 'raw' })],
      });
      await until('the attach to begin on the first compute worker', () => fs.existsSync(started), 180_000);
      const stalled = Number(fs.readFileSync(started, 'utf8').trim());
      expect((await nas.volumeList()).volumes).toEqual(['vm-a']);
      expect(await handle.query(volumeQuery)).toMatchObject({ phase: 'mapping', export: { url } });
      expect((await handle.query(volumeQuery)).attachment).toBeUndefined();
      process.kill(first.pid!, 'SIGKILL');

      startComputeWorker();
      expect(await mapped).toEqual({ volume: 'vm-a', phase: 'mapped', target: url, changed: true });
      // The new worker ended the command the dead one had left running, and attached again.
      expect(alive(stalled)).toBe(false);
      const runs = await activityRuns(handle);
      expect(runs.computeAttach!.maxAttempt).toBeGreaterThan(1);
      expect([runs.volumeCloneExport!.scheduled, runs.computeAttach!.scheduled]).toEqual([1, 1]);
      expect((await handle.query(volumeQuery)).attachment).toEqual({ kind: 'iscsi-direct', url, sizeBytes: 32 * MiB });
      // One clone, one target open to this compute host alone, and no session left behind by the dead attach.
      expect((await nas.volumeList()).volumes).toEqual(['vm-a']);
      const [target, ...others] = await targets();
      expect(others).toEqual([]);
      expect(target).toMatchObject({ acls: [`iqn.2026-01.org.imgflow:${nodeHost}`], sessions: 0 });

      await handle.executeUpdate(unmapUpdate, { args: [{ by: 'alice' }] });
      expect(await targets()).toEqual([]);
      expect(await nas.volumeList()).toEqual({ volumes: ['vm-a'], exports: [] });
      expect((await handle.query(volumeQuery)).attachment).toBeUndefined();
      await handle.executeUpdate(deleteUpdate, { args: [{ by: 'alice' }] });
      expect({ targets: await targets(), stored: await nas.volumeList() }).toEqual(before);
    });
    await connection.close();
  }, 300_000);
});

describe('Temporal server restarted in the middle of a map', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-vol-server-');
  const home = path.join(dir, 'home');
  const shims = path.join(dir, 'shims');
  fs.mkdirSync(shims);
  const started = path.join(shims, 'attach-started');
  const release = path.join(shims, 'attach-release');
  // The compute host's first look at the clone (its local attach) waits for the test's word, so
  // the server goes down and comes back while the map is under way.
  stallingShim(shims, 'qemu-img', '*info*/volumes/vm-s.qcow2*', started, release);
  const children: ChildProcess[] = [];
  let server: Awaited<ReturnType<typeof ownDevServer>> | undefined;
  afterAll(() => {
    children.forEach((c) => killGroup(c.pid));
    server?.stop();
  });

  it('ends mapped on the restarted server with one clone, and leaks nothing', async () => {
    // This test's own server, started again on the same port and database: the run's shared one serves other files at the same time.
    const own = (server = await ownDevServer(dir));
    const { address, namespace } = own;
    await own.start();
    // One client throughout, as a long-lived starter would have: it reconnects to the restarted server.
    const client = new Client({
      connection: await Connection.connect({ address }),
      namespace,
      dataConverter: testDataConverter(),
    });
    const nasHost = uniqueQueue('nas');
    const nodeHost = uniqueQueue('node');
    const image = `vs${nasHost.slice(-6)}`;
    const run = createRunner(memoryLogger().logger);
    const volumesDir = path.join(home, 'nas', nasHost, 'volumes');
    const worker = (role: string, host: string, env: NodeJS.ProcessEnv = {}) => {
      const child = spawnWorker({ home, role, host, env, address, namespace });
      logLines(child);
      children.push(child);
      return child;
    };
    const workers = [
      worker('orchestrator', 'orch'),
      worker('nas', nasHost),
      worker('compute', nodeHost, { PATH: `${shims}:${process.env.PATH}` }),
    ];
    const polled = (queue: string, type: number) => async () =>
      (
        (
          await client.workflowService.describeTaskQueue({
            namespace,
            taskQueue: { name: queue, kind: 1 },
            taskQueueType: type,
          })
        ).pollers ?? []
      ).length > 0;
    await until(
      'the workers to poll',
      async () =>
        (await polled(WORKFLOW_QUEUE, 1)()) &&
        (await polled(queues.nas(nasHost), 2)()) &&
        (await polled(queues.compute(nodeHost), 2)()),
      180_000,
    );

    const file = await storeVersion(client, run, {
      home,
      nas: nasHost,
      image,
      format: 'qcow2',
      mib: 32,
      writable: true,
    });
    const request = mapRequest({ image, nas: nasHost, node: nodeHost, file, format: 'qcow2' });
    const handle = await startVolume(client, 'vm-s');
    // The asker's server goes away mid-request: it gets its answer or an error, never a wrong answer.
    const asked = handle.executeUpdate(mapUpdate, { args: [request] }).catch((err: unknown) => err);
    await until('the attach to begin', () => fs.existsSync(started), 180_000);
    expect((await handle.query(volumeQuery)).phase).toBe('mapping');
    await own.kill();
    await own.start();
    fs.writeFileSync(release, '');

    // Asked again, as a user whose command lost its server would: answered once the first map is done.
    const again = await handle.executeUpdate(mapUpdate, { args: [request] });
    const device = path.join(volumesDir, 'vm-s.qcow2');
    expect(again).toMatchObject({ phase: 'mapped', target: device });
    const first = await asked;
    if (!(first instanceof Error))
      expect(first).toEqual({ volume: 'vm-s', phase: 'mapped', target: device, changed: true });
    // The workers outlived the server's restart.
    expect(workers.every((w) => alive(w.pid!))).toBe(true);
    expect(await handle.query(volumeQuery)).toMatchObject({ phase: 'mapped', attachment: { kind: 'local', device } });
    const runs = await activityRuns(handle);
    expect([runs.volumeCloneExport!.scheduled, runs.computeAttach!.scheduled]).toEqual([1, 1]);
    expect(fs.readdirSync(volumesDir)).toEqual(['vm-s.qcow2']);

    await handle.executeUpdate(unmapUpdate, { args: [{ by: 'alice' }] });
    await handle.executeUpdate(deleteUpdate, { args: [{ by: 'alice' }] });
    expect(fs.readdirSync(volumesDir)).toEqual([]);
    expect((await handle.result()).phase).toBe('deleted');
    await client.connection.close();
  }, 400_000);
});

describe('a sync pull that fails', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-vol-syncfail-');
  const nasPool = throwawayPool(dir);
  const nodePool = throwawayPool(dir);
  const home = path.join(dir, 'home');
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => killGroup(c.pid)));

  it('is retried, shown as failed with its reason, keeps the last good sync, and recovers', async () => {
    const nasHost = uniqueQueue('nas');
    const nodeHost = uniqueQueue('node');
    const image = `vc${nasHost.slice(-6)}`;
    const run = createRunner(memoryLogger().logger);
    const worker = (role: string, host: string, env: NodeJS.ProcessEnv) => {
      const child = spawnWorker({ home, role, host, env: { IMGFLOW_SYNC_LOCAL: '1', ...env } });
      children.push(child);
      return logLines(child);
    };
    const nasLog = worker('nas', nasHost, { IMGFLOW_NAS_POOL: `${nasPool.name}/imgflow` });
    const nodeLog = worker('compute', nodeHost, { IMGFLOW_COMPUTE_POOL: `${nodePool.name}/imgflow` });
    const cli = imgflowAt(home);
    const nodeVolume = `${nodePool.name}/imgflow/volumes/vm-c`;
    const pipelines = (log: () => Record<string, unknown>[]) => log().filter((l) => l.msg === 'pipeline');
    // zfs-fuse refuses to rename a mounted dataset ("dataset is busy"), and may call it busy to
    // an unmount, or to the rename after it, for a moment after it was last used.
    const rename = async (from: string, to: string) => {
      await until(
        `zfs rename ${from} ${to}`,
        async () => {
          // An unmount that failed (busy) or was done already (by an earlier try) leaves it to the rename.
          await run(['zfs', 'unmount', from], { okExitCodes: [1] });
          return (await run(['zfs', 'rename', from, to], { okExitCodes: [1] })).exitCode === 0;
        },
        30_000,
      );
      await run(['zfs', 'mount', to]);
    };

    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE }, async () => {
      await storeVersion(client, run, { home, nas: nasHost, image, format: 'raw', mib: 32, writable: true });
      await until(
        'the workers to poll',
        async () =>
          (await hasWorker(client, NAMESPACE, queues.nas(nasHost))) &&
          hasWorker(client, NAMESPACE, queues.compute(nodeHost)),
        180_000,
      );
      const handle = await startVolume(client, 'vm-c');
      // The volume's speeds limit its transfers: download the node's copy, upload the pulls.
      expect(
        (await cli('volume-attrs', 'vm-c', '--upload-speed', `${8 * MiB}`, '--download-speed', `${16 * MiB}`)).status,
      ).toBe(0);
      const mapped = await cli(
        'map',
        'vm-c',
        '--image',
        `${image}:v1`,
        '--nas',
        nasHost,
        '--compute',
        nodeHost,
        '--sync',
        '--frequency',
        '3600',
        '--wait',
        '120',
      );
      expect(mapped.stderr).toBe('');
      expect(mapped.status).toBe(0);
      const nodeCopy = mapped.stdout.trim();
      await expect
        .poll(() => pipelines(nodeLog))
        .toEqual([expect.objectContaining({ bytesPerSecond: 16 * MiB, exitCodes: [0, 0] })]);

      await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0xa5 2M 1M', nodeCopy]);
      expect((await cli('sync-now', 'vm-c')).status).toBe(0);
      await expect
        .poll(() => pipelines(nasLog))
        .toEqual([expect.objectContaining({ bytesPerSecond: 8 * MiB, exitCodes: [0, 0] })]);
      const good = (await handle.query(volumeQuery)).sync!;
      expect(good.lastSyncAt).toBeDefined();

      // The node's copy goes away from its pool: every pull fails until it is back.
      await rename(nodeVolume, `${nodeVolume}-away`);
      const failed = await cli('sync-now', 'vm-c');
      expect(failed.status).toBe(1);
      expect(failed.stdout).toBe('');
      expect(failed.stderr).toMatch(/^imgflow: .*sync of vm-c failed: .*does not exist/);
      expect(failed.stderr.trim().split('\n')).toHaveLength(1);
      expect((await activityRuns(handle)).volumePull!.maxAttempt).toBe(5);
      let view = await handle.query(volumeQuery);
      expect(view.phase).toBe('mapped');
      expect(view.sync).toMatchObject({
        failures: 1,
        lastSyncAt: good.lastSyncAt,
        lastSnapshot: good.lastSnapshot,
        lastError: expect.stringMatching(/does not exist/),
      });
      expect(view.history.at(-1)).toMatchObject({ by: 'alice', action: 'sync-failed' });
      expect(view.history.filter((h) => h.action === 'sync')).toHaveLength(1);

      // Shown as failed, with the reason, to people and to scripts.
      await expect
        .poll(async () => (await cli('maps', '--nas', nasHost)).stdout, { timeout: 30_000, interval: 1000 })
        .toMatch(/^vm-c\s.*\smapped \(sync failed: .*does not exist.*\)/m);
      const listed = JSON.parse((await cli('--json', 'maps', '--nas', nasHost)).stdout) as VolumeView[];
      expect(listed).toEqual([
        expect.objectContaining({
          volume: 'vm-c',
          sync: expect.objectContaining({ lastError: view.sync!.lastError, lastSyncAt: good.lastSyncAt }),
        }),
      ]);

      // The schedule retries sooner than the frequency, and fails again while the copy is away.
      view = await until(
        'a scheduled retry to fail too',
        async () => {
          const v = await handle.query(volumeQuery);
          return v.sync!.failures >= 2 && v;
        },
        120_000,
      );
      expect(view.history.at(-1)).toMatchObject({ by: 'imgflow', action: 'sync-failed' });
      expect(view.sync!.lastSyncAt).toBe(good.lastSyncAt);

      // The copy is back: the next scheduled pull succeeds and clears the failure.
      await rename(`${nodeVolume}-away`, nodeVolume);
      view = await until(
        'a scheduled pull to succeed',
        async () => {
          const v = await handle.query(volumeQuery);
          return v.sync!.lastSyncAt !== good.lastSyncAt && v;
        },
        120_000,
      );
      expect(view.sync).toMatchObject({ failures: 0 });
      expect(view.sync!.lastError).toBeUndefined();
      expect(view.sync!.lastSnapshot).not.toBe(good.lastSnapshot);
      expect(view.history.at(-1)).toMatchObject({ by: 'imgflow', action: 'sync' });
      expect((await cli('maps', '--nas', nasHost)).stdout).not.toMatch(/sync failed/);

      expect((await cli('unmap', 'vm-c')).status).toBe(0);
      expect((await cli('delete-volume', 'vm-c')).status).toBe(0);
      const left = async (pool: string) =>
        (await run(['zfs', 'list', '-H', '-r', '-o', 'name', `${pool}/imgflow/volumes`])).stdout
          .split('\n')
          .filter(Boolean);
      expect(await left(nodePool.name)).toEqual([`${nodePool.name}/imgflow/volumes`]);
      expect(await left(nasPool.name)).toEqual([`${nasPool.name}/imgflow/volumes`]);
    });
    await connection.close();
  }, 400_000);
});
