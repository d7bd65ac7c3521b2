/** Tests' access to the run's Temporal server: clients, and workers with injected activities. */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { NativeConnection, Runtime, Worker, DefaultLogger } from '@temporalio/worker';
import { expect, inject } from 'vitest';
import { AesGcmCodec, imgflowDataConverter } from '../../lib/codec.js';
import type { ConnectionSettings } from '../../lib/connection.js';
import { readKeyring } from '../../lib/keyring.js';
import {
  connectWithin,
  ensureSearchAttributes,
  ensureTemporalCli,
  spawnDevServer,
  waitForNamespace,
} from '../../starters/temporal-server.js';
import { freePort } from './ports.js';
import { alive, killGroup } from './processes.js';
import { until } from './wait.js';

/** This fork's own namespace (see global set-up). */
export const NAMESPACE = `imgflow-${process.env.VITEST_POOL_ID ?? '1'}`;

let runtimeQuiet = false;
function quietRuntime() {
  if (runtimeQuiet) return;
  runtimeQuiet = true;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
}

export function uniqueQueue(prefix = 'test'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** The data converter imgflow's own clients and workers use, on the run's keyring: the whole suite runs encrypted. */
export function testDataConverter() {
  return imgflowDataConverter({ codecKeys: inject('codecKeysPath') });
}

/** A payload as the client reads it: tests that look into raw histories decode through the run's codec. */
export async function decodePayload(payload: Payload): Promise<Payload> {
  const [decoded] = await new AesGcmCodec(readKeyring(inject('codecKeysPath'))).decode([payload]);
  return decoded!;
}

/** The run's dev server (plain gRPC), unless a test's own server is given. */
export interface TestServer {
  settings: ConnectionSettings;
  namespace: string;
}

function runServer(): TestServer {
  return { settings: { address: inject('temporalAddress'), tls: false }, namespace: NAMESPACE };
}

export async function testClient(
  server: TestServer = runServer(),
): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect(server.settings);
  return {
    connection,
    client: new Client({ connection, namespace: server.namespace, dataConverter: testDataConverter() }),
  };
}

/**
 * Runs workers for the duration of `fn`: one for workflows (the bundle made in global set-up) and
 * any activity workers given, each on its own task queue.
 */
let workersMade = 0;

/** Each test worker its own identity: a command tells a stopped worker's polls from a running one's by it. */
function testIdentity(): string {
  return `test-${++workersMade}@${process.pid}`;
}

export async function withWorkers<T>(
  spec: {
    workflowQueue?: string;
    activities?: Record<string, Record<string, (...args: never[]) => Promise<unknown>>>;
    server?: TestServer;
  },
  fn: () => Promise<T>,
): Promise<T> {
  quietRuntime();
  const server = spec.server ?? runServer();
  const connection = await NativeConnection.connect(server.settings);
  const workers: Worker[] = [];
  if (spec.workflowQueue) {
    workers.push(
      await Worker.create({
        connection,
        namespace: server.namespace,
        taskQueue: spec.workflowQueue,
        identity: testIdentity(),
        workflowBundle: { codePath: inject('workflowBundlePath') },
        dataConverter: testDataConverter(),
      }),
    );
  }
  for (const [taskQueue, activities] of Object.entries(spec.activities ?? {})) {
    workers.push(
      await Worker.create({
        connection,
        namespace: server.namespace,
        taskQueue,
        activities,
        identity: testIdentity(),
        dataConverter: testDataConverter(),
      }),
    );
  }
  const running = workers.map((w) => w.run());
  try {
    return await fn();
  } finally {
    for (const w of workers) w.shutdown();
    await Promise.allSettled(running);
    await connection.close();
  }
}

/**
 * The length of a workflow's history once it is at rest: its last workflow task completed, and the
 * events an entity handed on have been signalled (each signal's outcome lands in the history, with
 * a task of its own, after the update that recorded them has answered).
 */
export async function eventCount(handle: WorkflowHandle): Promise<number> {
  const { EventType: T } = temporal.api.enums.v1;
  const tasks = new Set([
    T.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    T.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    T.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    T.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    T.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
  ]);
  return until('the workflow to be at rest', async () => {
    const events = (await handle.fetchHistory()).events!;
    const count = (type: temporal.api.enums.v1.EventType) => events.filter((e) => e.eventType === type).length;
    const signalled =
      count(T.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED) +
      count(T.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED);
    const lastTask = events.findLast((e) => tasks.has(e.eventType!));
    const atRest =
      signalled === count(T.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED) &&
      lastTask?.eventType === T.EVENT_TYPE_WORKFLOW_TASK_COMPLETED;
    return atRest && events.length;
  });
}

/** Rejected by a validator: the request fails with the reason and the workflow's history does not grow. */
export async function expectRejected(
  handle: WorkflowHandle,
  attempt: () => Promise<unknown>,
  reason: RegExp,
): Promise<void> {
  const before = await eventCount(handle);
  const error = (await attempt().catch((e: unknown) => e)) as Error & { cause?: Error };
  expect(error).toBeInstanceOf(Error);
  expect(`${error.message} ${error.cause?.message ?? ''}`).toMatch(reason);
  expect(await eventCount(handle)).toBe(before);
}

/**
 * A dev server of a test's own, on a free port, that the test may kill (as a crash would) and
 * start again on the same database: for faults the run's shared server must not suffer.
 */
export async function ownDevServer(dir: string) {
  const namespace = 'imgflow';
  const server = {
    cli: ensureTemporalCli(),
    port: await freePort(),
    dbFile: path.join(dir, 'server', 'db.sqlite'),
    logFile: path.join(dir, 'server', 'server.log'),
    namespace,
  };
  const address = `127.0.0.1:${server.port}`;
  let pid: number | undefined;
  return {
    address,
    namespace,
    port: server.port,
    dbFile: server.dbFile,
    /** Starts it and waits until its namespace and search attributes answer. */
    async start(): Promise<void> {
      pid = spawnDevServer(server).pid;
      const connection = await connectWithin(address, 60_000);
      if (!connection) throw new Error(`the test's Temporal dev server did not start; see ${server.logFile}`);
      await waitForNamespace(connection, namespace, 30_000);
      await ensureSearchAttributes(connection, namespace);
      await connection.close();
    },
    /** SIGKILLs it, and returns once it is gone. */
    async kill(): Promise<void> {
      killGroup(pid);
      await until('the server to be gone', () => pid === undefined || !alive(pid));
    },
    stop: () => killGroup(pid),
  };
}
