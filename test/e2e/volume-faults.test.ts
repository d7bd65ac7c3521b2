/**
 * A real NAS worker process (`imgflow worker --role nas`) is killed (SIGKILL) after the clone is
 * made and before the export: a new worker finishes the map from where it stood. The map ends
 * mapped with one clone, nothing partial is left, and after unmap and delete the NAS holds
 * exactly what it held before.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { loadConfig } from '../../lib/config.js';
import { findOnPath } from '../../lib/which.js';
import { sha256File } from '../../lib/files.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { registerVersionUpdate } from '../../workflows/lineage.js';
import { deleteUpdate, mapUpdate, unmapUpdate, volumeQuery, volumeWorkflow, volumeWorkflowId } from '../../workflows/volume.js';
import { spawnWorker } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { alive, killGroup } from '../support/processes.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { newVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

const MiB = 1024 * 1024;

describe('NAS worker killed between clone and export', () => {
  requireTools('qemu-img', 'qemu-io');
  const home = tempDir('imgflow-vol-faults-');
  const shims = tempDir('imgflow-vol-shims-');
  const calls = path.join(shims, 'info-calls');
  // The first look at the new clone (right after it is made, before the activity returns) stalls,
  // so the kill lands with the clone on disk and the export not begun.
  fs.writeFileSync(
    path.join(shims, 'qemu-img'),
    `#!/bin/sh\ncase "$*" in *info*/volumes/vm-9.qcow2*) if [ ! -e ${calls} ]; then echo $$ > ${calls}; sleep 30; fi;; esac\nexec ${findOnPath('qemu-img')} "$@"\n`,
    { mode: 0o755 },
  );
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
    const nas = createNasVolumeActivities({ run, config: nasConfig, env: {} });
    const volumesDir = path.join(home, 'nas', nasHost, 'volumes');
    const startNasWorker = () => {
      const child = spawnWorker({ home, role: 'nas', host: nasHost, env: { PATH: `${shims}:${process.env.PATH}` } });
      children.push(child);
      return child;
    };

    const file = path.join(home, 'nas', nasHost, 'store', image, 'v1', `${image}-v1.qcow2`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, `${32 * MiB}`]);
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [queues.compute(nodeHost)]: createComputeActivities({ run, config: nodeConfig, env: {} }) } }, async () => {
      await updateLineage(client, image, registerVersionUpdate, { ...newVersion(1), artifacts: [{ format: 'qcow2', host: nasHost, path: file, sha256: await sha256File(file), bytes: fs.statSync(file).size }] });
      const before = await nas.volumeList();
      expect(before).toEqual({ volumes: [], exports: [] });

      const first = startNasWorker();
      const request = { by: 'alice', base: { image, version: 'v1', artifact: { format: 'qcow2', host: nasHost, path: file } }, nas: nasHost, computeHost: nodeHost, waitSeconds: 120 };
      const handle = await client.workflow.start(volumeWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: volumeWorkflowId('vm-9'),
        args: [{ volume: 'vm-9' }],
        typedSearchAttributes: [{ key: SA.kind, value: 'volume' }],
      });
      const mapped = handle.executeUpdate(mapUpdate, { args: [request] });
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
      const history = await handle.fetchHistory();
      const cloneAttempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes && e.activityTaskStartedEventAttributes.attempt! > 1);
      expect(cloneAttempts.length).toBeGreaterThanOrEqual(1);

      await handle.executeUpdate(unmapUpdate, { args: [{ by: 'alice' }] });
      // Unmap keeps the clone (with no exporter, a stored volume is listed as usable in place).
      expect((await nas.volumeList()).volumes).toEqual(['vm-9']);
      await handle.executeUpdate(deleteUpdate, { args: [{ by: 'alice' }] });
      expect(await nas.volumeList()).toEqual(before);
      expect(fs.readdirSync(volumesDir)).toEqual([]);
    });
    await connection.close();
  }, 180_000);
});
