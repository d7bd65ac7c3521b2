/**
 * Answers that are true under failure: a read nobody answers says the listing is unavailable and
 * fails, never prints an empty map; a client keeps trying to connect up to the bound it names; a
 * command waiting for a workflow's outcome outlives its server going away and coming back.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { SA } from '../../common/search-attributes.js';
import { outcomeOf } from '../../starters/answers.js';
import { pingWorkflow } from '../../workflows/ping.js';
import { lineageWorkflowId } from '../../workflows/lineage/messages.js';
import { lineageWorkflow } from '../../workflows/lineage/workflow.js';
import { volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { volumeWorkflow } from '../../workflows/volume/workflow.js';
import { imgflow, imgflowAsync, imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { ownDevServer, testClient, testDataConverter, uniqueQueue, withWorkers } from '../support/temporal.js';

function expectOneLine(
  result: { status: number | null; stdout: string; stderr: string },
  pattern: RegExp,
  status: number,
): void {
  expect(result.stdout).toBe('');
  const lines = result.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(result.status).toBe(status);
}

describe('a listing no orchestrator answers', () => {
  const home = tempDir();
  const cli = imgflowAt(home, {});

  /** A volume's workflow on `queue`, on a NAS of its own so that `maps --nas` lists it alone. */
  async function volumeOn(client: Client, queue: string) {
    const nas = uniqueQueue('nas');
    const volume = uniqueQueue('vm');
    const handle = await client.workflow.start(volumeWorkflow, {
      workflowId: volumeWorkflowId(volume),
      taskQueue: queue,
      args: [{ volume }],
      typedSearchAttributes: [
        { key: SA.kind, value: 'volume' },
        { key: SA.volume, value: volume },
        { key: SA.nas, value: nas },
      ],
    });
    return { handle, nas, volume };
  }

  it('says the storage map is unavailable and fails, instead of printing an empty map', async () => {
    const { client, connection } = await testClient();
    const queue = uniqueQueue('orchestrator');
    // A volume whose orchestrator ran it and then stopped: the server still lists its pollers.
    const { handle, nas, volume } = await volumeOn(client, queue);
    await withWorkers({ workflowQueue: queue }, async () => {
      expect((await handle.query(volumeQuery)).phase).toBe('unmapped');
      // While it runs, the map lists the volume.
      await expect
        .poll(async () => (await cli('--json', 'maps', '--nas', nas)).stdout, { timeout: 15_000, interval: 500 })
        .toContain(`"volume": "${volume}"`);
    });
    const namespace = client.options.namespace;
    const taskQueue = { name: queue, kind: 1 };
    const pollers = async () =>
      ((await client.workflowService.describeTaskQueue({ namespace, taskQueue, taskQueueType: 1 })).pollers ?? []).map(
        (p) => p.identity,
      );
    expect(await pollers()).not.toEqual([]);

    // The answer bound is far off: the stopped worker's last heartbeat explains the refusal.
    const stopped = await cli('--answer-timeout', '600', 'maps', '--nas', nas);
    expectOneLine(
      stopped,
      new RegExp(`^imgflow: the storage map is unavailable: no orchestrator polls the ${queue} queue`),
      1,
    );

    // A poller that takes the query and never answers: only the bound ends the wait.
    const silent = new AbortController();
    const polling = connection
      .withAbortSignal(silent.signal, () =>
        connection.withDeadline(Date.now() + 60_000, () =>
          client.workflowService.pollWorkflowTaskQueue({ namespace, taskQueue, identity: 'silent-poller' }),
        ),
      )
      .catch(() => undefined);
    await expect.poll(pollers, { timeout: 15_000, interval: 200 }).toContain('silent-poller');
    const down = await cli('--answer-timeout', '2', 'maps', '--nas', nas);
    expectOneLine(
      down,
      new RegExp(
        `^imgflow: the storage map is unavailable: no orchestrator on the ${queue} queue answered within 2s, the --answer-timeout bound \\(is a worker of role orchestrator running\\?`,
      ),
      1,
    );
    silent.abort();
    await polling;
    await handle.terminate('test over');
    await connection.close();
  });

  it('says at once, naming the queue, when no orchestrator has polled it at all', async () => {
    const { client, connection } = await testClient();
    const queue = uniqueQueue('nobody');
    const { handle, nas, volume } = await volumeOn(client, queue);
    await expect
      .poll(async () => (await client.workflow.count(`${SA.nas.name} = '${nas}'`)).count, { timeout: 15_000 })
      .toBe(1);
    // The answer bound is far off: only the queue's missing poller can explain the refusal.
    const listed = await cli('--answer-timeout', '600', 'maps', '--nas', nas);
    expectOneLine(
      listed,
      new RegExp(`^imgflow: the storage map is unavailable: no orchestrator polls the ${queue} queue`),
      1,
    );
    const attrs = await cli('--answer-timeout', '600', 'volume-attrs', volume);
    expectOneLine(
      attrs,
      new RegExp(`^imgflow: volume ${volume} is unavailable: no orchestrator polls the ${queue} queue`),
      1,
    );
    await handle.terminate('test over');
    await connection.close();
  });

  it('refuses an update, and a map, at once and in one line naming the queue, when no orchestrator polls it', async () => {
    const { client, connection } = await testClient();
    const queue = uniqueQueue('nobody');
    const image = uniqueQueue('img');
    const handle = await client.workflow.start(lineageWorkflow, {
      workflowId: lineageWorkflowId(image),
      taskQueue: queue,
      args: [{ image }],
    });
    const unavailable = new RegExp(
      `^imgflow: the lineage of ${image} is unavailable: no orchestrator polls the ${queue} queue`,
    );
    // The answer bound is far off: only the queue's missing poller can explain the refusal.
    expectOneLine(await cli('--answer-timeout', '600', 'tag', image, '--name', 'never'), unavailable, 1);
    expectOneLine(
      await cli(
        '--answer-timeout',
        '600',
        'map',
        uniqueQueue('vm'),
        '--image',
        image,
        '--nas',
        'n1',
        '--compute',
        'c1',
      ),
      unavailable,
      1,
    );
    // Nothing reached the lineage: its history holds its start alone, with no update in it.
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.workflowExecutionUpdateAcceptedEventAttributes)).toBe(false);
    await handle.terminate('test over');
    await connection.close();
  });
});

describe('connecting', () => {
  const home = tempDir();

  it('names its bound when nothing answers', () => {
    const result = imgflow(['--home', home, '--address', '127.0.0.1:1', '--connect-timeout', '1', 'maps']);
    expectOneLine(
      result,
      /^imgflow: --address: expected a Temporal server answering within 1s, the --connect-timeout bound \(.*; start it with 'imgflow dev'.*\), got "127\.0\.0\.1:1"/,
      2,
    );
    const fromEnv = imgflow(['--home', home, '--address', '127.0.0.1:1', 'maps'], { IMGFLOW_CONNECT_TIMEOUT: '1' });
    expectOneLine(fromEnv, /within 1s, the --connect-timeout bound/, 2);
  });
});

describe('a server that goes away while a command waits', () => {
  const dir = tempDir();
  let server: Awaited<ReturnType<typeof ownDevServer>> | undefined;
  afterAll(() => server?.stop());

  it('is reached once it is back, late, and the command gets the workflow’s own outcome', async () => {
    const own = (server = await ownDevServer(dir));
    const { address, namespace } = own;

    // A command started before its server: it keeps trying, with backoff, and gets through once the server is up.
    // Until then the port is held by a listener that drops every connection, so no other test takes it.
    const holder = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => holder.listen(own.port, '127.0.0.1', resolve));
    const early = imgflowAsync([
      '--home',
      path.join(dir, 'home'),
      '--address',
      address,
      '--namespace',
      namespace,
      '--connect-timeout',
      '120',
      'maps',
    ]);
    await new Promise((r) => setTimeout(r, 6000));
    await new Promise((resolve) => holder.close(resolve));
    await own.start();
    const listed = await early;
    expect(listed.stderr).toBe('');
    expect(listed.status).toBe(0);

    const client = new Client({
      connection: await Connection.connect({ address }),
      namespace,
      dataConverter: testDataConverter(),
    });
    const workflowQueue = uniqueQueue('orchestrator');
    const hostQueue = uniqueQueue('nas');
    const handle = await client.workflow.start(pingWorkflow, {
      taskQueue: workflowQueue,
      workflowId: uniqueQueue('ping'),
      args: [{ queue: hostQueue, waitSeconds: 600 }],
    });
    const outcome = outcomeOf<{ host: string }>(handle, 120_000, 'the ping').catch((err: unknown) => err);

    // The server goes away for longer than the client's own retries cover, and comes back.
    await own.kill();
    await new Promise((r) => setTimeout(r, 30_000));
    await own.start();

    const testServer = { settings: { address, tls: false as const }, namespace };
    await withWorkers(
      {
        server: testServer,
        workflowQueue,
        activities: { [hostQueue]: { hostFacts: async () => ({ host: 'the-answer' }) } },
      },
      async () => {
        expect(await outcome).toEqual({ host: 'the-answer' });
      },
    );
    await client.connection.close();
    // The server's database, with every workflow's history, is its owner's only.
    expect(fs.statSync(own.dbFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(own.dbFile)).mode & 0o777).toBe(0o700);
  }, 300_000);
});
