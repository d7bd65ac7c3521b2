/**
 * The Rocks bridge's protocol as a Rocks frontend lives it, on the real RabbitMQ and the real
 * Temporal dev server: requests answered or refused and never run late, the compute daemon's half,
 * recovery of an unmap that failed on the NAS, the listing and attributes as Rocks reads them, and
 * a `bdev` Rocks can use. Each test has its own hosts, exchange and volumes.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Long from 'long';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { DEFAULT_IQN_PREFIX } from '../../activities/drivers/naming.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createRunner } from '../../activities/runner.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { computeSettings, loadConfig, nasSettings } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import {
  checkRate,
  startRocksBridge,
  type RocksBridge,
  type RocksBridgeOptions,
} from '../../starters/bridges/rocks-amqp.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { ensureSearchAttributes, waitForNamespace } from '../../starters/temporal-server.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';
import { volumeWorkflowId } from '../../workflows/volume/messages.js';
import { spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { RABBITMQ_URL, RocksFrontend, type RocksReply } from '../support/rocks-frontend.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers, type TestServer } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { newVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

const MiB = 1024 * 1024;
type Activities = Record<string, Record<string, (...args: never[]) => Promise<unknown>>>;

describe('the Rocks bridge, as a Rocks frontend lives it', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-bridge-protocol-');
  const run = createRunner(memoryLogger().logger);
  let frontend: RocksFrontend;
  const declared: { queue?: string; exchange?: string }[] = [];

  beforeAll(async () => {
    frontend = await RocksFrontend.open();
  });

  afterAll(async () => {
    if (!frontend) return;
    for (const what of declared) await frontend.remove(what);
    await frontend.close();
  });

  /** A NAS and a compute host of their own, their activities, an exchange, and a stored version to clone. */
  /**
   * The site's activities with the compute host's first attach step held: `stuck` resolves once a
   * map reaches it, `open` lets it (and every later one) go on.
   */
  function heldAtAttach(s: ReturnType<typeof site>) {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let entered!: () => void;
    const stuck = new Promise<void>((resolve) => (entered = resolve));
    const computeQueue = queues.compute(s.nodeHost);
    const real = s.compute[computeQueue]!;
    const gated: Activities = {
      ...s.nas,
      [computeQueue]: {
        ...real,
        computeInitiator: async () => (entered(), gate.then(() => (real.computeInitiator as () => Promise<unknown>)())),
      },
    };
    return { gated, stuck, open };
  }

  function site(computeEnv: NodeJS.ProcessEnv = {}, nasEnv: NodeJS.ProcessEnv = {}) {
    const home = path.join(dir, uniqueQueue('home'));
    const nasHost = uniqueQueue('nas');
    const nodeHost = uniqueQueue('node');
    const image = `img${nasHost.slice(-6)}`;
    const exchange = `rocks.vm-manage.${nasHost}`;
    declared.push({ exchange });
    const nasConfig = loadConfig({ home, host: nasHost }, {});
    const nodeConfig = loadConfig({ home, host: nodeHost }, {});
    const nas: Activities = {
      [queues.nas(nasHost)]: {
        ...createHostActivities({ role: 'nas', config: nasConfig, arch: 'x86_64', run }),
        ...createNasVolumeActivities({ run, config: nasConfig, settings: nasSettings(nasEnv) }),
      },
    };
    const compute: Activities = {
      [queues.compute(nodeHost)]: {
        ...createHostActivities({ role: 'compute', config: nodeConfig, arch: 'x86_64', run }),
        ...createComputeActivities({ run, config: nodeConfig, settings: computeSettings(computeEnv) }),
      },
    };
    const volumes = path.join(home, 'nas', nasHost, 'volumes');
    return {
      home,
      nasHost,
      nodeHost,
      image,
      exchange,
      nas,
      compute,
      volumes,
      device: (zvol: string) => path.join(volumes, `${zvol}.qcow2`),
      send: (request: object | string, extra = {}) => frontend.send(exchange, nasHost, request, extra),
      /** A stored version as a build leaves it: a read-only qcow2 in the NAS's store, in the lineage. */
      async store(server?: TestServer): Promise<void> {
        const file = path.join(home, 'nas', nasHost, 'store', image, 'v1', `${image}-v1.qcow2`);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, `${64 * MiB}`]);
        fs.chmodSync(file, 0o444);
        const { client, connection } = await testClient(server);
        await updateLineage(client, image, registerVersionUpdate, {
          ...newVersion(1),
          artifacts: [
            {
              format: 'qcow2',
              host: nasHost,
              path: file,
              sha256: await sha256File(file),
              bytes: fs.statSync(file).size,
            },
          ],
        });
        await connection.close();
      },
    };
  }
  type Site = ReturnType<typeof site>;

  async function withBridge<T>(
    s: Site,
    extra: Partial<RocksBridgeOptions>,
    fn: (bridge: RocksBridge, logs: Record<string, unknown>[]) => Promise<T>,
  ): Promise<T> {
    const { client, connection } = await testClient();
    const { logger, lines } = memoryLogger();
    await frontend.declareExchange(s.exchange);
    const bridge = await startRocksBridge({
      url: RABBITMQ_URL,
      nas: s.nasHost,
      image: `${s.image}:v1`,
      exchange: s.exchange,
      client,
      namespace: NAMESPACE,
      logger,
      timeoutSeconds: 60,
      bdev: 'any',
      ...extra,
    });
    try {
      return await fn(bridge, lines);
    } finally {
      await bridge.stop();
      await connection.close();
    }
  }

  const rows = (reply: RocksReply) => reply.body as Record<string, unknown>[];
  const logged = (lines: Record<string, unknown>[], pattern: RegExp) => lines.find((l) => pattern.test(String(l.msg)));

  it('10: answers or refuses every request and never runs one late: no bridge, a queue left behind, a bound passed, a sender gone', async () => {
    const s = site();
    const map = (zvol: string) => ({
      action: 'map_zvol',
      zpool: 'tank',
      zvol,
      remotehost: s.nodeHost,
      size: 1,
      sync: false,
    });
    await frontend.declareExchange(s.exchange);
    // No bridge: the mandatory publish comes back at once, as it did with no NAS daemon.
    await expect(s.send({ action: 'list_zvols' })).rejects.toThrow(/no queue is bound/);

    // A shared durable queue as an earlier bridge left it, with a request that waited there unserved.
    const old = await frontend.connection.createChannel();
    await old.assertQueue(s.nasHost, { durable: true });
    await old.bindQueue(s.nasHost, s.exchange, s.nasHost);
    await old.close();
    declared.push({ queue: s.nasHost });
    const leftOver = s.send(map('vm-left'));

    const { gated, stuck, open } = heldAtAttach(s);
    const { client, connection } = await testClient();
    try {
      await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: gated }, async () => {
        await s.store();
        await withBridge(s, { concurrency: 1 }, async (_bridge, logs) => {
          expect(await leftOver).toMatchObject({
            action: 'zvol_mapped',
            status: 'error',
            error: expect.stringMatching(/^map_zvol: it waited in a shared queue .* nothing was done$/),
          });

          // One map in flight, held at the compute host: the next requests wait in the queue.
          const first = s.send(map('vm-first'));
          await stuck;
          // The sender's patience, as its expiration says: passed while it waited, so refused unrun.
          const expired = await s.send(map('vm-expired'), { expiration: '1' });
          expect(expired).toMatchObject({
            action: 'zvol_mapped',
            status: 'error',
            error: expect.stringMatching(/^map_zvol: it waited in queue .* past its bound.*nothing was done$/),
          });
          // A sender that gave up before its turn: dropped, never run.
          await frontend.sendAndGiveUp(s.exchange, s.nasHost, map('vm-gone'));
          open();
          expect(await first).toMatchObject({ action: 'zvol_mapped', status: 'success', bdev: s.device('vm-first') });
          await until('the request of a sender who gave up is dropped', () =>
            logged(logs, /dropped unrun: its sender gave up/),
          );
          expect(await s.send({ action: 'list_zvols' })).toMatchObject({ status: 'success' });
          expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-first' })).toMatchObject({ status: 'success' });
          expect(await s.send({ action: 'del_zvol', zvol: 'vm-first', zpool: 'tank' })).toMatchObject({
            status: 'success',
          });
        });
      });
      for (const zvol of ['vm-left', 'vm-expired', 'vm-gone']) {
        await expect(client.workflow.getHandle(volumeWorkflowId(zvol)).describe()).rejects.toThrow(/not found/i);
      }
      expect(fs.readdirSync(s.volumes)).toEqual([]);
    } finally {
      await connection.close();
    }
    // Bridge stopped: its queues went with it, and a request is refused at once again.
    expect(await frontend.queueExists(s.nasHost)).toBe(false);
    await expect(s.send({ action: 'list_zvols' })).rejects.toThrow(/no queue is bound/);
  });

  it('10: refuses a request still queued when the bridge stops, and sends new ones back once it has', async () => {
    const s = site();
    const map = (zvol: string) => ({
      action: 'map_zvol',
      zpool: 'tank',
      zvol,
      remotehost: s.nodeHost,
      size: 1,
      sync: false,
    });
    const { gated, stuck, open } = heldAtAttach(s);
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: gated }, async () => {
      await s.store();
      const { client, connection } = await testClient();
      await frontend.declareExchange(s.exchange);
      const bridge = await startRocksBridge({
        url: RABBITMQ_URL,
        nas: s.nasHost,
        image: `${s.image}:v1`,
        exchange: s.exchange,
        client,
        namespace: NAMESPACE,
        logger: memoryLogger().logger,
        timeoutSeconds: 60,
        bdev: 'any',
        concurrency: 1,
      });
      try {
        const first = s.send(map('vm-stop-1'));
        await stuck;
        // Confirmed by the broker: it waits in the bridge's queue behind the first.
        const { reply: queued } = await frontend.post(s.exchange, s.nasHost, map('vm-stop-2'));
        const stopping = bridge.stop();
        open();
        await stopping;
        await expect(s.send({ action: 'list_zvols' })).rejects.toThrow(/no queue is bound/);
        expect(await first).toMatchObject({ status: 'success' });
        expect(await queued).toMatchObject({
          action: 'zvol_mapped',
          status: 'error',
          error: 'map_zvol: the bridge is stopping; nothing was done',
        });
        await expect(client.workflow.getHandle(volumeWorkflowId('vm-stop-2')).describe()).rejects.toThrow(/not found/i);
      } finally {
        open();
        await bridge.stop();
        await client.workflow
          .getHandle(volumeWorkflowId('vm-stop-1'))
          .terminate('test done')
          .catch(() => undefined);
        await connection.close();
      }
    });
  });

  it('10: starts and serves with no orchestrator polling, answering with that error until one does', async () => {
    // A namespace of its own, where nothing has ever polled.
    const namespace = uniqueQueue('rocks-ns');
    const { connection } = await testClient();
    await connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86400) },
    });
    await waitForNamespace(connection, namespace, 30_000);
    await ensureSearchAttributes(connection, namespace);
    await connection.close();
    const server: TestServer = { settings: { address: inject('temporalAddress'), tls: false }, namespace };
    const s = site();
    await frontend.declareExchange(s.exchange);
    const args = [
      '--address',
      inject('temporalAddress'),
      '--namespace',
      namespace,
      '--home',
      s.home,
      'bridge',
      'rocks-amqp',
      '--url',
      RABBITMQ_URL,
      '--nas',
      s.nasHost,
      '--image',
      `${s.image}:v1`,
      '--exchange',
      s.exchange,
      '--bdev',
      'any',
    ];
    const bridge: ChildProcess = spawnImgflow(args, { IMGFLOW_LOG_PRETTY: '0' });
    let stderr = '';
    bridge.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    bridge.stdout!.resume();
    try {
      await until('the bridge is ready', () => /bridge ready/.test(stderr) || bridge.exitCode !== null);
      expect(bridge.exitCode).toBe(null);
      expect(stderr).toMatch(/no orchestrator polls yet/);
      const none = /no imgflow orchestrator polls task queue imgflow .*nothing was done/;
      expect(await s.send({ action: 'list_zvols' })).toMatchObject({
        action: 'zvol_list',
        status: 'error',
        error: expect.stringMatching(none),
      });
      expect(
        await s.send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-early',
          remotehost: s.nodeHost,
          size: 1,
          sync: false,
        }),
      ).toMatchObject({ action: 'zvol_mapped', status: 'error', error: expect.stringMatching(none) });
      await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { ...s.nas, ...s.compute }, server }, async () => {
        await s.store(server);
        expect(await s.send({ action: 'list_zvols' })).toEqual({ action: 'zvol_list', status: 'success', body: [] });
        expect(
          await s.send({
            action: 'map_zvol',
            zpool: 'tank',
            zvol: 'vm-early',
            remotehost: s.nodeHost,
            size: 1,
            sync: false,
          }),
        ).toMatchObject({ status: 'success', bdev: s.device('vm-early') });
        expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-early' })).toMatchObject({ status: 'success' });
        expect(await s.send({ action: 'del_zvol', zvol: 'vm-early', zpool: 'tank' })).toMatchObject({
          status: 'success',
        });
      });
    } finally {
      process.kill(-bridge.pid!, 'SIGTERM');
      const code = await new Promise<number | null>((resolve) =>
        bridge.exitCode !== null ? resolve(bridge.exitCode) : bridge.on('exit', resolve),
      );
      expect(code).toBe(0);
    }
  });

  it('12: lists and sets attributes as Rocks reads them, and warns of a reply nobody can take', async () => {
    const s = site();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { ...s.nas, ...s.compute } }, async () => {
      await s.store();
      await withBridge(s, {}, async (_bridge, logs) => {
        expect(
          await s.send({
            action: 'map_zvol',
            zpool: 'tank',
            zvol: 'vm-attrs',
            remotehost: s.nodeHost,
            size: 1,
            remotepool: null,
            sync: false,
          }),
        ).toMatchObject({ status: 'success' });
        const listed = async () => rows(await s.send({ action: 'list_zvols' })).find((r) => r.zvol === 'vm-attrs');
        await until('the volume is listed as mapped', async () => (await listed())?.remotehost === s.nodeHost);
        // Nothing syncs: null, which Rocks shows as "mapped" (false == 0 would show "NAS<-VM sched").
        expect(await listed()).toMatchObject({
          zvol: 'vm-attrs',
          zpool: 'tank',
          remotehost: s.nodeHost,
          is_sending: null,
          is_delete_remote: null,
          state: 'mapped',
        });

        const attrs = async () => (await s.send({ action: 'get_zvol_attrs', zvol: 'vm-attrs' })).body;
        // A frequency for a volume with no pulls is refused, not acknowledged and dropped.
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', frequency: 900 })).toMatchObject({
          action: 'set_zvol_attrs',
          status: 'error',
          error: expect.stringMatching(/^frequency: expected a volume mapped in sync mode/),
        });
        expect(await attrs()).toMatchObject({ frequency: null });
        // Rates as pv -L takes them.
        expect(
          await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', uploadspeed: '10M', downloadspeed: '512k' }),
        ).toMatchObject({ status: 'success', body: { uploadspeed: 10 * MiB, downloadspeed: 512 * 1024 } });
        expect(await attrs()).toMatchObject({ uploadspeed: 10 * MiB, downloadspeed: 512 * 1024 });
        // None puts an attribute back to its default (no limit); a frequency reset on it is its default already.
        expect(
          await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', uploadspeed: null, frequency: null }),
        ).toMatchObject({ status: 'success' });
        expect(await attrs()).toMatchObject({ uploadspeed: null, downloadspeed: 512 * 1024, frequency: null });
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', nextsync: null })).toMatchObject({
          status: 'success',
        });
        // Bad values: one line naming the field.
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', downloadspeed: '10 MB/s' })).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^downloadspeed: expected bytes per second as pv -L takes them/),
        });
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', uploadspeed: '0k' })).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^uploadspeed: expected a rate from 1 byte/),
        });
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs' })).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^attrs: expected one of frequency/),
        });
        expect(await s.send({ action: 'set_zvol_attrs', zvol: 'vm-attrs', nextsync: 1700000000 })).toMatchObject({
          status: 'error',
          error: expect.stringMatching(/^nextsync: /),
        });
        expect(
          await s.send({ action: 'map_zvol', zpool: 'tank/../x', zvol: 'vm-other', remotehost: s.nodeHost, size: 1 }),
        ).toMatchObject({ status: 'error', error: expect.stringMatching(/^zpool: expected a name/) });

        // A reply whose queue does not exist comes back to the bridge: a warning, not silence.
        await frontend.sendUnanswerable(s.exchange, s.nasHost, { action: 'list_zvols' }, uniqueQueue('nobody'));
        await until('the undelivered reply is logged', () =>
          logs.find((l) => /reply not delivered/.test(String(l.msg)) && l.level === 40),
        );

        expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-attrs' })).toMatchObject({ status: 'success' });
        expect(await listed()).toMatchObject({ remotehost: null, zpool: 'tank', is_sending: null, state: 'unmapped' });
        expect(await s.send({ action: 'del_zvol', zvol: 'vm-attrs', zpool: 'tank' })).toMatchObject({
          status: 'success',
        });
      });
    });
  });

  it('12: reads rates in the pv -L form and refuses others with the field named', () => {
    expect([
      checkRate('r', '10M'),
      checkRate('r', '512k'),
      checkRate('r', '1.5G'),
      checkRate('r', 4096),
      checkRate('r', '2048'),
    ]).toEqual([10 * MiB, 512 * 1024, 1.5 * 1024 * MiB, 4096, 2048]);
    for (const bad of ['', 'fast', '-1', '10MB', '1e3', '0', 0, 1.5, null])
      expect(() => checkRate('uploadspeed', bad)).toThrow(/^uploadspeed: expected /);
  });

  it("9: answers the compute daemon's requests: list_initiator before a map, list_dev after, and refuses an old NAS daemon's", async () => {
    const s = site();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { ...s.nas, ...s.compute } }, async () => {
      await s.store();
      await withBridge(s, { computeHosts: [s.nodeHost] }, async () => {
        const toNode = (request: object, extra = {}) => frontend.send(s.exchange, s.nodeHost, request, extra);
        // What `rocks add host storagemap` and VM start do: the initiator first, from the compute host.
        const asked = await toNode({ action: 'list_initiator' });
        expect(asked).toEqual({ action: 'zvol_list', status: 'success', body: `${DEFAULT_IQN_PREFIX}:${s.nodeHost}` });
        const mapped = await s.send({
          action: 'map_zvol',
          zpool: 'tank',
          zvol: 'vm-node',
          remotehost: s.nodeHost,
          size: '1',
          remotepool: null,
          sync: false,
          initiator: asked.body,
        });
        expect(mapped).toMatchObject({ action: 'zvol_mapped', status: 'success', bdev: s.device('vm-node') });
        // `rocks list host storagedev`.
        await until('the device is listed on the compute host', async () => {
          const devs = await toNode({ action: 'list_dev' });
          return (devs.body as Record<string, unknown>)['vm-node'] ? devs : undefined;
        });
        expect(await toNode({ action: 'list_dev' })).toEqual({
          action: 'dev_list',
          status: 'success',
          node_type: 'mixed',
          body: { 'vm-node': { sync: 'iscsi', target: s.device('vm-node'), device: s.device('vm-node') } },
        });

        // An old NAS daemon's requests to the host are refused, answered to it through the exchange.
        const oldNas = uniqueQueue('oldnas');
        const channel = await frontend.connection.createChannel();
        await channel.assertQueue(oldNas, { exclusive: true, autoDelete: true });
        await channel.bindQueue(oldNas, s.exchange, oldNas);
        const replies: RocksReply[] = [];
        await channel.consume(oldNas, (m) => m && replies.push(JSON.parse(m.content.toString()) as RocksReply), {
          noAck: true,
        });
        for (const action of ['map_zvol', 'unmap_zvol', 'sync_zvol']) {
          await frontend.sendUnanswerable(
            s.exchange,
            s.nodeHost,
            {
              action,
              target: 'iqn.2001-04.com.nas-0-0-vm-node',
              zvol: 'vm-node',
              nas: 'nas-0-0',
              size: '1',
              sync: false,
            },
            oldNas,
          );
        }
        await until('the old NAS daemon is answered', () => replies.length === 3);
        expect(replies.map((r) => [r.action, r.status, r.target])).toEqual([
          ['zvol_mapped', 'error', 'iqn.2001-04.com.nas-0-0-vm-node'],
          ['zvol_unmapped', 'error', 'iqn.2001-04.com.nas-0-0-vm-node'],
          ['zvol_synced', 'error', 'iqn.2001-04.com.nas-0-0-vm-node'],
        ]);
        expect(replies[0]!.error).toMatch(
          /^map_zvol: .* is served by imgflow, which an img-storage-nas daemon cannot drive/,
        );
        await channel.close();

        expect(await toNode({ action: 'list_zvols' })).toMatchObject({
          action: 'action_unsupported',
          status: 'error',
          error: expect.stringMatching(/^action: expected one of list_initiator, list_dev/),
        });
        // A host the bridge does not answer for is refused by the broker, as with no daemon.
        await expect(frontend.send(s.exchange, uniqueQueue('node'), { action: 'list_initiator' })).rejects.toThrow(
          /no queue is bound/,
        );
        expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-node' })).toMatchObject({ status: 'success' });
        expect(await toNode({ action: 'list_dev' })).toEqual({
          action: 'dev_list',
          status: 'success',
          node_type: 'mixed',
          body: {},
        });
        expect(await s.send({ action: 'del_zvol', zvol: 'vm-node', zpool: 'tank' })).toMatchObject({
          status: 'success',
        });
      });
    });
  });

  it('11: the next unmap or remove finishes an unmap that failed on the NAS, once the NAS is back', async () => {
    const s = site();
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: s.compute }, async () => {
      await s.store();
      await withBridge(s, { timeoutSeconds: 20 }, async () => {
        const listed = async (zvol: string) =>
          rows(await s.send({ action: 'list_zvols' })).find((r) => r.zvol === zvol);
        await withWorkers({ activities: s.nas }, async () => {
          for (const zvol of ['vm-r1', 'vm-r2'])
            expect(
              await s.send({ action: 'map_zvol', zpool: 'tank', zvol, remotehost: s.nodeHost, size: 1, sync: false }),
            ).toMatchObject({ status: 'success' });
        });
        // The NAS's worker is gone: the compute side detaches, the NAS step cannot run.
        for (const zvol of ['vm-r1', 'vm-r2']) {
          expect(await s.send({ action: 'unmap_zvol', zvol })).toMatchObject({
            action: 'zvol_unmapped',
            status: 'error',
            error: expect.stringMatching(new RegExp(`^unmap of ${zvol} failed: no worker took the step`)),
          });
          await until(`${zvol} is listed in error`, async () => (await listed(zvol))?.state === 'error');
        }
        // Still down: the unmap is refused again, and nothing changes.
        expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-r1' })).toMatchObject({ status: 'error' });
        await withWorkers({ activities: s.nas }, async () => {
          expect(await s.send({ action: 'unmap_zvol', zvol: 'vm-r1' })).toEqual({
            action: 'zvol_unmapped',
            status: 'success',
            zvol: 'vm-r1',
          });
          await until('vm-r1 is unmapped', async () => (await listed('vm-r1'))?.state === 'unmapped');
          expect(await listed('vm-r1')).toMatchObject({ remotehost: null, iscsi_target: null });
          // `rocks remove host storageimg` on the other: its unmap is finished, then it is deleted.
          expect(await s.send({ action: 'del_zvol', zvol: 'vm-r2', zpool: 'tank' })).toEqual({
            action: 'zvol_deleted',
            status: 'success',
            zvol: 'vm-r2',
          });
          expect(fs.existsSync(s.device('vm-r2'))).toBe(false);
          expect(await s.send({ action: 'del_zvol', zvol: 'vm-r1', zpool: 'tank' })).toMatchObject({
            status: 'success',
          });
        });
      });
      // The resumed unmap's history pins the new path for the replay test.
      const { client, connection } = await testClient();
      const handle = client.workflow.getHandle(volumeWorkflowId('vm-r2'));
      expect((await handle.result()).phase).toBe('deleted');
      await saveHistory('volumeWorkflow-unmap-resumed', handle);
      await connection.close();
    });
  });

  it('13: in block mode maps only where bdev is a block device, and will not start where the answer is one Rocks cannot use', async () => {
    const files = site();
    const s = site({}, { IMGFLOW_NAS_EXPORT: 'tgt' });
    const kernel = site({ IMGFLOW_COMPUTE_ATTACH: 'iscsi-kernel' });
    await withWorkers(
      { workflowQueue: WORKFLOW_QUEUE, activities: { ...files.nas, ...s.nas, ...s.compute, ...kernel.compute } },
      async () => {
        await s.store();
        const { client, connection } = await testClient();
        const { logger } = memoryLogger();
        const options = {
          url: RABBITMQ_URL,
          nas: s.nasHost,
          image: `${s.image}:v1`,
          exchange: s.exchange,
          client,
          namespace: NAMESPACE,
          logger,
          timeoutSeconds: 60,
        };
        try {
          await frontend.declareExchange(s.exchange);
          // An old daemon's consumer, as its client made it: a server-named exclusive queue bound by the host's name.
          const daemon = await frontend.connection.createChannel();
          const { queue: daemonQueue } = await daemon.assertQueue('', { exclusive: true, autoDelete: true });
          await daemon.bindQueue(daemonQueue, s.exchange, s.nasHost);
          await daemon.consume(daemonQueue, () => undefined, { noAck: true });
          await expect(startRocksBridge({ ...options, bdev: 'any' })).rejects.toThrow(
            new RegExp(`^requests to ${s.nasHost} on ${s.exchange.replace(/\./g, '\\.')} already reach a queue`),
          );
          await daemon.close();
          // A NAS that exports a file path: no block device on any compute host.
          await expect(startRocksBridge({ ...options, nas: files.nasHost })).rejects.toThrow(
            /^--bdev: expected any, or a NAS that exports over iSCSI \(.* exports none: its bdev would be a file path/,
          );
          // This host attaches iSCSI as a URL qemu opens: no block device for Rocks's phy: disk.
          await expect(startRocksBridge({ ...options, computeHosts: [s.nodeHost] })).rejects.toThrow(
            /^--bdev: expected any, or compute hosts that attach iSCSI as block devices \(.* attaches iscsi-direct/,
          );
          expect(await frontend.queueExists(s.nasHost)).toBe(false);
          // An iSCSI NAS and a host that logs in through the kernel give a block device: the bridge starts.
          const bridge = await startRocksBridge({ ...options, computeHosts: [kernel.nodeHost] });
          try {
            const refused = await s.send({
              action: 'map_zvol',
              zpool: 'tank',
              zvol: 'vm-block',
              remotehost: s.nodeHost,
              size: 1,
              sync: false,
            });
            expect(refused).toMatchObject({
              action: 'zvol_mapped',
              status: 'error',
              error: expect.stringMatching(
                /^remotehost: expected a compute host that attaches iSCSI as a block device/,
              ),
            });
            await expect(client.workflow.getHandle(volumeWorkflowId('vm-block')).describe()).rejects.toThrow(
              /not found/i,
            );
            // A second bridge for the same NAS does not start while this one holds its queue.
            await expect(startRocksBridge({ ...options, bdev: 'any' })).rejects.toThrow(
              new RegExp(`queue ${s.nasHost} is held by another connection`),
            );
          } finally {
            await bridge.stop();
          }
        } finally {
          await connection.close();
        }
      },
    );
  });
});
