/**
 * The Rocks bridge against the real RabbitMQ on this machine and the real `imgflow` program: an
 * AMQP client sends what a Rocks frontend sends (a mandatory publish to `rocks.vm-manage` with the
 * NAS host as routing key, a fresh exclusive reply queue, no correlation id) and reads the old
 * reply shapes, while the volumes behind them are qcow2 clones with local attach. RabbitMQ not
 * running is a failure.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { loadConfig } from '../../lib/config.js';
import { startRocksBridge } from '../../starters/bridges/rocks-amqp.js';
import { volumeWorkflowId } from '../../workflows/volume/messages.js';
import { spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { RABBITMQ_URL as URL, RocksFrontend as Frontend } from '../support/rocks-frontend.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';

/** Resolves once the process has written a line matching `pattern` to stderr. */
function waitForLine(child: ChildProcess, output: () => string, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${pattern} within ${timeoutMs} ms; stderr: ${output()}`)),
      timeoutMs,
    );
    const check = () => {
      if (pattern.test(output())) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stderr!.on('data', check);
    child.on('exit', (code) => reject(new Error(`bridge exited with ${code}: ${output()}`)));
    check();
  });
}

describe('the Rocks bridge over RabbitMQ', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-bridge-rocks-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `br${nasHost.slice(-6)}`;
  /** The exchange Rocks frontends publish to, which the bridge uses by default. */
  const exchange = 'rocks.vm-manage';
  /** One that the NAS daemon declared itself, as pika declares by default: not durable. */
  const daemonExchange = `rocks.vm-manage.${nasHost}`;
  const run = createRunner(memoryLogger().logger);
  const nasConfig = loadConfig({ home, host: nasHost }, {});
  const nodeConfig = loadConfig({ home, host: nodeHost }, {});
  const activities = {
    [queues.nas(nasHost)]: {
      ...createHostActivities({ role: 'nas', config: nasConfig, arch: 'x86_64', run }),
      ...createNasVolumeActivities({ run, config: nasConfig }),
    },
    [queues.compute(nodeHost)]: {
      ...createHostActivities({ role: 'compute', config: nodeConfig, arch: 'x86_64', run }),
      ...createComputeActivities({ run, config: nodeConfig }),
    },
  };
  let frontend: Frontend;

  beforeAll(async () => {
    frontend = await Frontend.open();
  });

  afterAll(async () => {
    if (!frontend) return;
    await frontend.remove({ queue: nasHost, exchange: daemonExchange });
    await frontend.close();
  });

  /** A stored version as a build leaves it: a read-only qcow2 in the NAS's store, in the lineage. */
  async function storedVersion(): Promise<void> {
    const { client, connection } = await testClient();
    await storeVersion(client, run, { home, nas: nasHost, image });
    await connection.close();
  }

  it('maps, lists, sets attributes, unmaps and deletes as the NAS daemon did, and refuses bad requests', async () => {
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
      await storedVersion();
      const args = [
        '--address',
        inject('temporalAddress'),
        '--namespace',
        NAMESPACE,
        '--home',
        home,
        'bridge',
        'rocks-amqp',
        '--url',
        URL,
        '--nas',
        nasHost,
        '--image',
        `${image}:v1`,
        '--timeout',
        '60',
        '--bdev',
        'any',
      ];
      const bridge = spawnImgflow(args, { IMGFLOW_LOG_PRETTY: '0' });
      let stderr = '';
      bridge.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      bridge.stdout!.resume();
      try {
        await waitForLine(bridge, () => stderr, /bridge ready/);
        const send = (request: object | string) => frontend.send(exchange, nasHost, request);

        // As `rocks add host storagemap` sends it: the size as typed, no remote pool, no initiator.
        const mapped = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-1',
          remotehost: nodeHost,
          size: '1',
          remotepool: null,
          sync: false,
        });
        const device = path.join(home, 'nas', nasHost, 'volumes', 'vm-1.qcow2');
        expect(mapped).toEqual({ action: 'zvol_mapped', status: 'success', zvol: 'vm-1', bdev: device });
        expect(fs.existsSync(device)).toBe(true);

        await expect
          .poll(
            async () =>
              ((await send({ action: 'list_zvols' })).body as Record<string, unknown>[]).map((r) => [
                r.zvol,
                r.remotehost,
                r.iscsi_target,
                r.state,
              ]),
            { timeout: 15_000, interval: 500 },
          )
          .toEqual([['vm-1', nodeHost, device, 'mapped']]);
        const list = await send({ action: 'list_zvols' });
        expect(list).toMatchObject({ action: 'zvol_list', status: 'success' });
        expect(Object.keys((list.body as Record<string, unknown>[])[0]!)).toEqual(
          expect.arrayContaining([
            'zvol',
            'zpool',
            'iscsi_target',
            'remotehost',
            'remotepool',
            'is_sending',
            'is_delete_remote',
            'time',
            'nextsync',
            'frequency',
            'locked',
          ]),
        );

        expect(
          await send({ action: 'set_zvol_attrs', zvol: 'vm-1', uploadspeed: 1000, downloadspeed: '2000' }),
        ).toMatchObject({ action: 'set_zvol_attrs', status: 'success' });
        expect(await send({ action: 'get_zvol_attrs', zvol: 'vm-1' })).toEqual({
          action: 'get_zvol_attrs',
          status: 'success',
          body: { zvol: 'vm-1', frequency: null, nextsync: null, uploadspeed: 1000, downloadspeed: 2000 },
        });
        expect(await send({ action: 'set_zvol_attrs', zvol: 'vm-1', frequency: 5 })).toMatchObject({
          action: 'set_zvol_attrs',
          status: 'error',
          error: expect.stringMatching(/^frequency: expected a whole number from 10/),
        });
        expect(await send({ action: 'set_zvol_attrs', zvol: 'vm-1', nextsync: 1700000000 })).toMatchObject({
          action: 'set_zvol_attrs',
          status: 'error',
          error: expect.stringMatching(/^nextsync: /),
        });
        expect(await send({ action: 'get_zvol_attrs', zvol: 'vm-never' })).toMatchObject({
          action: 'get_zvol_attrs',
          status: 'error',
          error: expect.stringMatching(/^volume: expected a volume known to imgflow/),
        });

        const refused = await send({ action: 'del_zvol', zvol: 'vm-1', zpool: 'tank' });
        expect(refused).toMatchObject({
          action: 'zvol_deleted',
          status: 'error',
          error: expect.stringMatching(/^volume: expected an unmapped volume to delete .*mapped/),
        });
        expect(fs.existsSync(device)).toBe(true);

        expect(await send({ action: 'unmap_zvol', zvol: 'vm-1' })).toEqual({
          action: 'zvol_unmapped',
          status: 'success',
          zvol: 'vm-1',
        });
        expect(await send({ action: 'del_zvol', zvol: 'vm-1', zpool: 'tank' })).toEqual({
          action: 'zvol_deleted',
          status: 'success',
          zvol: 'vm-1',
        });
        expect(fs.existsSync(device)).toBe(false);

        // Bad requests: one line naming the field, nothing started.
        expect(await send('{"action": "map_zvol", ')).toMatchObject({
          action: 'action_unsupported',
          status: 'error',
          error: expect.stringMatching(/malformed JSON/),
        });
        expect(await send({ action: 'resize_zvol', zvol: 'vm-1' })).toMatchObject({
          action: 'action_unsupported',
          status: 'error',
          error: expect.stringMatching(/^action: expected one of map_zvol/),
        });
        expect(await send({ zvol: 'vm-1' })).toMatchObject({
          action: 'action_unsupported',
          status: 'error',
          error: expect.stringMatching(/^action: expected one of/),
        });
        expect(await send('["map_zvol"]')).toMatchObject({
          action: 'action_unsupported',
          status: 'error',
          error: expect.stringMatching(/^request: expected a JSON object/),
        });
        const badInitiator = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-2',
          remotehost: nodeHost,
          size: 1,
          sync: false,
          initiator: 'iqn x; reboot',
        });
        expect(badInitiator).toMatchObject({
          action: 'zvol_mapped',
          status: 'error',
          error: expect.stringMatching(/^initiator: expected an iSCSI initiator name/),
        });
        const badSize = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-2',
          remotehost: nodeHost,
          size: 'big',
          sync: false,
        });
        expect(badSize).toMatchObject({
          action: 'zvol_mapped',
          status: 'error',
          error: expect.stringMatching(/^size: /),
        });
        const badName = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: '../etc',
          remotehost: nodeHost,
          size: 1,
          sync: false,
        });
        expect(badName).toMatchObject({
          action: 'zvol_mapped',
          status: 'error',
          error: expect.stringMatching(/^zvol: expected a name/),
        });
        const badHost = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-2',
          remotehost: 'node;rm -rf',
          size: 1,
          sync: false,
        });
        expect(badHost).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^remotehost: expected a host name/),
        });
        const downHost = await send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-2',
          remotehost: 'node-nowhere',
          size: 1,
          sync: false,
        });
        expect(downHost).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^remotehost: expected a compute host whose worker is running/),
        });
        expect(await send({ action: 'unmap_zvol', zvol: 'vm-never' })).toMatchObject({
          action: 'zvol_unmapped',
          status: 'error',
          error: expect.stringMatching(/^volume: expected a volume known to imgflow/),
        });
        expect(fs.readdirSync(path.join(home, 'nas', nasHost, 'volumes'))).toEqual([]);

        // A request nobody can be answered for is dropped, and the bridge goes on answering.
        await frontend.sendUnanswerable(exchange, nasHost, { action: 'list_zvols' });
        expect(await send({ action: 'list_zvols' })).toEqual({ action: 'zvol_list', status: 'success', body: [] });
      } finally {
        process.kill(-bridge.pid!, 'SIGTERM');
        const code = await new Promise<number | null>((resolve) =>
          bridge.exitCode !== null ? resolve(bridge.exitCode) : bridge.on('exit', resolve),
        );
        expect({ code, stopped: /bridge stopped/.test(stderr) }).toEqual({ code: 0, stopped: true });
      }
      // The NAS's queue was the bridge's alone and went with it, as the NAS daemon's did.
      expect(await frontend.queueExists(nasHost)).toBe(false);
      expect(stderr).not.toMatch(/request not answered/);
      expect(stderr).toMatch(/amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672/);
      expect(stderr).not.toMatch(/guest:guest/);
    });
  });

  it('joins the exchange the NAS daemon declared, and answers a request that gets stuck with an error within its bound', async () => {
    // pika's default declaration, as the daemon made it: declaring it durable would be refused.
    const declare = await frontend.connection.createChannel();
    await declare.assertExchange(daemonExchange, 'direct', { durable: false });
    await declare.close();
    const { client, connection } = await testClient();
    // The compute host's first step waits on a gate: the map cannot finish within the bound.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const compute = createComputeActivities({ run, config: nodeConfig });
    const gated = {
      ...activities,
      [queues.compute(nodeHost)]: {
        ...activities[queues.compute(nodeHost)]!,
        computeInitiator: async () => gate.then(() => compute.computeInitiator()),
      },
    };
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: gated }, async () => {
      const logger = memoryLogger().logger;
      const bridge = await startRocksBridge({
        url: URL,
        nas: nasHost,
        image: `${image}:v1`,
        exchange: daemonExchange,
        client,
        namespace: NAMESPACE,
        logger,
        timeoutSeconds: 3,
        bdev: 'any',
      });
      try {
        const reply = await frontend.send(daemonExchange, nasHost, {
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-3',
          remotehost: nodeHost,
          size: 1,
          sync: false,
        });
        expect(reply).toMatchObject({
          action: 'zvol_mapped',
          status: 'error',
          error: expect.stringMatching(/^map_zvol: no answer within 3s/),
        });
      } finally {
        open();
        await bridge.stop();
        await client.workflow
          .getHandle(volumeWorkflowId('vm-3'))
          .terminate('test done')
          .catch(() => undefined);
        await connection.close();
      }
    });
  });
});
