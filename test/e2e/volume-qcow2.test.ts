/**
 * Clone-to-compute on the default drivers (qcow2 clone with the stored version as backing file,
 * no export, local attach) through the real CLI: map prints the path, a repeated or concurrent
 * map makes one clone, unmap keeps the clone, delete is refused while mapped, and bad input is
 * refused with one line and exit 2 before anything changes. A compute host that is down fails
 * the map within its bound with nothing left behind.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { revokeUpdate } from '../../workflows/lineage/messages.js';
import { mapUpdate, volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { volumeWorkflow } from '../../workflows/volume/workflow.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { until } from '../support/wait.js';
import { storeVersion } from '../support/versions.js';
import { localVolumeHosts } from '../support/volume-hosts.js';

const MiB = 1024 * 1024;

describe('volumes on qcow2 with local attach', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-vol-qcow2-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `vq${nasHost.slice(-6)}`;
  const run = createRunner(memoryLogger().logger);
  const activities = localVolumeHosts({ home, nasHost, nodeHost, run });
  const cli = imgflowAt(home);
  const volumesDir = path.join(home, 'nas', nasHost, 'volumes');
  const volumeFiles = () => (fs.existsSync(volumesDir) ? fs.readdirSync(volumesDir).sort() : []);

  /** A stored version as a build leaves it: a read-only qcow2 in the NAS's store, registered in the lineage. */
  async function storedVersion(n: number): Promise<string> {
    const { client, connection } = await testClient();
    const file = await storeVersion(client, run, { home, nas: nasHost, image, n });
    await connection.close();
    return file;
  }

  it('maps, lists, refuses delete while mapped, unmaps twice and deletes, through the CLI', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      const base = await storedVersion(1);
      const mapped = await cli(
        'map',
        'vm-1',
        '--image',
        `${image}:v1`,
        '--nas',
        nasHost,
        '--compute',
        nodeHost,
        '--size',
        '1',
      );
      expect(mapped.stderr).toBe('');
      expect(mapped.status).toBe(0);
      const device = path.join(volumesDir, 'vm-1.qcow2');
      expect(mapped.stdout).toBe(`${device}\n`);
      const info = JSON.parse((await run(['qemu-img', 'info', '-U', '--output=json', device])).stdout) as Record<
        string,
        unknown
      >;
      expect(info['virtual-size']).toBe(1024 * MiB);
      expect(String(info['full-backing-filename'] ?? info['backing-filename'])).toContain(
        path.join('bases', image, 'v1.qcow2'),
      );
      const read = await run(['qemu-io', '-f', 'qcow2', '-r', '-U', '-c', 'read -P 0x5a 0 1M', device]);
      expect(read.stdout).not.toMatch(/Pattern verification failed/);
      expect(fs.existsSync(base)).toBe(true);

      const again = await cli(
        'map',
        'vm-1',
        '--image',
        `${image}:v1`,
        '--nas',
        nasHost,
        '--compute',
        nodeHost,
        '--size',
        '1',
      );
      expect(again.status).toBe(0);
      expect(again.stdout).toBe(`${device}\n`);
      expect(again.stderr).toMatch(/already mapped/);

      // Pull settings on a volume without pulls would be kept and do nothing: refused.
      for (const flag of [['--freeze'], ['--frequency', '60']]) {
        const attrs = await cli('volume-attrs', 'vm-1', ...flag);
        expect([attrs.status, attrs.stderr]).toEqual([
          2,
          expect.stringMatching(
            /^imgflow: (freeze|frequency): expected a volume mapped in sync mode \(vm-1 is not: map it with --sync\)/,
          ),
        ]);
      }

      const refused = await cli('delete-volume', 'vm-1');
      expect(refused.status).toBe(2);
      expect(refused.stderr).toMatch(/^imgflow: volume: expected an unmapped volume to delete .*mapped.*\n$/);
      expect(volumeFiles()).toEqual(['vm-1.qcow2']);

      const view = await client.workflow.getHandle(volumeWorkflowId('vm-1')).query(volumeQuery);
      expect(view).toMatchObject({
        phase: 'mapped',
        nas: nasHost,
        computeHost: nodeHost,
        base: { image, version: 'v1' },
        target: device,
        locked: false,
      });
      await expect
        .poll(async () => (await cli('maps', '--nas', nasHost)).stdout, { timeout: 15_000, interval: 500 })
        .toMatch(
          new RegExp(
            `^vm-1\\s+${nasHost}\\s+\\S+\\s+${nodeHost}\\s+${image}:v1\\s+${device.replace(/[.]/g, '\\.')}\\s+mapped\\s`,
            'm',
          ),
        );
      const listed = await cli('--json', 'maps', '--compute', nodeHost);
      expect((JSON.parse(listed.stdout) as { volume: string }[]).map((v) => v.volume)).toEqual(['vm-1']);
      const header = (await cli('maps', '--nas', nasHost)).stdout.split('\n')[0];
      expect(header).toMatch(/^VOLUME\s+NAS\s+POOL\s+COMPUTE\s+BASE\s+TARGET\s+STATE\s+SINCE\s+NEXT SYNC\s+LOCKED$/);

      const unmapped = await cli('unmap', 'vm-1');
      expect(unmapped.status).toBe(0);
      expect(unmapped.stderr).toMatch(/vm-1 unmapped from .*clone kept/);
      expect(volumeFiles()).toEqual(['vm-1.qcow2']);
      const noop = await cli('unmap', 'vm-1');
      expect(noop.status).toBe(0);
      expect(noop.stderr).toBe('vm-1 is not mapped: nothing to do\n');

      // A re-map of the kept clone attaches it again without a new clone.
      expect((await cli('map', 'vm-1', '--image', `${image}:v1`, '--nas', nasHost, '--compute', nodeHost)).status).toBe(
        0,
      );
      expect((await cli('unmap', 'vm-1')).status).toBe(0);

      const deleted = await cli('delete-volume', 'vm-1');
      expect(deleted.status).toBe(0);
      expect(volumeFiles()).toEqual([]);
      const handle = client.workflow.getHandle(volumeWorkflowId('vm-1'));
      expect((await handle.result()).phase).toBe('deleted');
      await saveHistory('volumeWorkflow', handle);
    });
    await connection.close();
  });

  it('two maps of one volume at once make one clone and print the same path', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      const args = ['map', 'vm-2', '--image', `${image}:v1`, '--nas', nasHost, '--compute', nodeHost];
      const [a, b] = await Promise.all([cli(...args), cli(...args)]);
      expect([a.status, b.status]).toEqual([0, 0]);
      expect(a.stdout).toBe(b.stdout);
      const history = await client.workflow.getHandle(volumeWorkflowId('vm-2')).fetchHistory();
      const clones = history.events!.filter(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'volumeCloneExport',
      );
      expect(clones).toHaveLength(1);
      expect(volumeFiles()).toEqual(['vm-2.qcow2']);
      expect((await cli('unmap', 'vm-2')).status).toBe(0);
      expect((await cli('delete-volume', 'vm-2')).status).toBe(0);
    });
    await connection.close();
  });

  it('keeps volumes and bases readable by their owner only, and fails the unmap of a busy device once, at its bound', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      const mapped = await cli('map', 'vm-5', '--image', `${image}:v1`, '--nas', nasHost, '--compute', nodeHost);
      expect(mapped.status).toBe(0);
      const device = path.join(volumesDir, 'vm-5.qcow2');
      const modeOf = (file: string) => fs.statSync(file).mode & 0o777;
      expect(modeOf(volumesDir)).toBe(0o700);
      expect(modeOf(device)).toBe(0o600);
      const bases = path.join(home, 'nas', nasHost, 'bases', image);
      expect(modeOf(bases)).toBe(0o700);
      expect(modeOf(path.join(bases, 'v1.qcow2'))).toBe(0o400);

      // Something on the compute host keeps the device open past the unmap's bound.
      const fd = fs.openSync(device, 'r');
      const holder = spawn('sleep', ['600'], { stdio: [fd, 'ignore', 'ignore'] });
      fs.closeSync(fd);
      try {
        await until('the holder to hold the device', () => fs.readdirSync(`/proc/${holder.pid}/fd`).length > 0);
        const busy = await cli('unmap', 'vm-5', '--wait', '1');
        expect(busy.stdout).toBe('');
        expect(busy.stderr).toMatch(
          new RegExp(`^imgflow: unmap of vm-5 failed: .*vm-5\\.qcow2 is still in use by pid ${holder.pid} after 1s\n$`),
        );
        expect(busy.status).toBe(1);
        // One attempt: a retry would only wait the bound again.
        const history = await client.workflow.getHandle(volumeWorkflowId('vm-5')).fetchHistory();
        const scheduled = history
          .events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'computeDetach')
          .map((e) => e.eventId!.toString());
        const attempts = history
          .events!.filter((e) =>
            scheduled.includes(e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() ?? ''),
          )
          .map((e) => e.activityTaskStartedEventAttributes!.attempt);
        expect(attempts).toEqual([1]);
        expect((await client.workflow.getHandle(volumeWorkflowId('vm-5')).query(volumeQuery)).phase).toBe('mapped');
      } finally {
        holder.kill('SIGKILL');
      }
      await until(
        'the holder to let go',
        () => !fs.existsSync(`/proc/${holder.pid}/fd`) || fs.readdirSync(`/proc/${holder.pid}/fd`).length === 0,
      );
      expect((await cli('unmap', 'vm-5', '--wait', '5')).status).toBe(0);
      expect((await cli('delete-volume', 'vm-5')).status).toBe(0);
    });
    await connection.close();
  });

  it('refuses bad input with one line naming the field, exit 2, and changes nothing', async () => {
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      const ok = ['--image', `${image}:v1`, '--nas', nasHost, '--compute', nodeHost];
      const cases: [string[], RegExp][] = [
        [['map', 'a/b', ...ok], /^imgflow: volume: expected a name/],
        [['map', '..', ...ok], /^imgflow: volume: expected a name/],
        [['map', 'vm 3', ...ok], /^imgflow: volume: expected a name/],
        [['map', 'vm;rm', ...ok], /^imgflow: volume: expected a name/],
        [['map', 'vm-3', ...ok, '--size', '0'], /^imgflow: --size: expected a whole number/],
        [['map', 'vm-3', ...ok, '--size', '99999999'], /^imgflow: --size: expected a whole number/],
        [
          ['map', 'vm-3', '--image', `${image}:v1`, '--nas', 'nas-nowhere', '--compute', nodeHost],
          /^imgflow: --nas: expected a NAS storing/,
        ],
        [
          ['map', 'vm-3', '--image', `${image}:v1`, '--nas', 'bad/nas', '--compute', nodeHost],
          /^imgflow: --nas: expected a host name/,
        ],
        [
          ['map', 'vm-3', '--image', `${image}:v1`, '--nas', nasHost, '--compute', 'node-nowhere'],
          /^imgflow: --compute: expected a compute host whose worker is running/,
        ],
        [
          ['map', 'vm-3', '--image', `${image}:v9`, '--nas', nasHost, '--compute', nodeHost],
          /^imgflow: version: expected a version or tag/,
        ],
        [['map', 'vm-3', ...ok, '--frequency', '60'], /^imgflow: --frequency: expected to be given with --sync/],
        [['unmap', 'vm-never'], /^imgflow: volume: expected a volume known to imgflow/],
        [['clean', 'vm-never', '--reason', 'gone'], /^imgflow: --force: expected --force/],
      ];
      for (const [args, error] of cases) {
        const r = await cli(...args);
        expect({ args, status: r.status, lines: r.stderr.trim().split('\n').length }).toEqual({
          args,
          status: 2,
          lines: 1,
        });
        expect(r.stderr).toMatch(error);
        expect(r.stdout).toBe('');
      }

      await storedVersion(2);
      const { client, connection } = await testClient();
      await updateLineage(client, image, revokeUpdate, { by: 'alice', version: 'v2', reason: 'CVE-2026-0002' });
      await connection.close();
      const revoked = await cli('map', 'vm-3', '--image', `${image}:v2`, '--nas', nasHost, '--compute', nodeHost);
      expect(revoked.status).toBe(2);
      expect(revoked.stderr).toMatch(/^imgflow: --image: expected a version that is not revoked .*CVE-2026-0002.*\n$/);
      expect(volumeFiles()).toEqual([]);
    });
  });

  it('fails a map to a compute host that is down within the bound, with nothing left behind', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      const file = path.join(home, 'nas', nasHost, 'store', image, 'v1', `${image}-v1.qcow2`);
      const started = Date.now();
      const request = {
        by: 'alice',
        base: { image, version: 'v1', artifact: { format: 'qcow2', host: nasHost, path: file } },
        nas: nasHost,
        computeHost: 'node-down',
        waitSeconds: 3,
      };
      const handle = await client.workflow.start(volumeWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: volumeWorkflowId('vm-4'),
        args: [{ volume: 'vm-4' }],
      });
      await expect(handle.executeUpdate(mapUpdate, { args: [request] })).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(20_000);
      const view = await handle.query(volumeQuery);
      expect(view.phase).toBe('unmapped');
      expect(view.reason).toMatch(/no worker took the step from compute\.node-down/);
      expect(volumeFiles()).toEqual([]);
      await handle.terminate('test done');
    });
    await connection.close();
  });
});
