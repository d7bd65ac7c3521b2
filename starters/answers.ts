/**
 * Reads from workflows (queries) that say so when nobody answers. A query is answered by an
 * orchestrator worker; when none runs, the server holds the call until a deadline, and a listing
 * that skipped what did not answer would print an empty map as if it were the truth. Every read
 * here has one bound for the whole command (the client's --answer-timeout), and a read that is not
 * answered within it fails in one line saying what is unavailable.
 */
import type { Client, WorkflowHandle, WorkflowUpdateHandle } from '@temporalio/client';
import type { UpdateDefinition } from '@temporalio/common';
import { DEFAULT_ANSWER_TIMEOUT_S } from '../lib/config.js';

const bounds = new WeakMap<Client, number>();

/** temporal.api.enums.v1 values (the proto package's CommonJS namespace does not load as ESM). */
const TASK_QUEUE_KIND_NORMAL = 1;
const TASK_QUEUE_TYPE_WORKFLOW = 1;
const TASK_QUEUE_TYPE_ACTIVITY = 2;
const WORKER_STATUS_RUNNING = 1;
/** How long after a worker's stopping heartbeat its cancelled polls may still be recorded. */
const POLLS_END_MS = 2_000;
/** A worker that has just started polls within this; past it, nobody is there. */
const NO_POLLER_GRACE_MS = 500;

/** Whether a worker has polled the queue lately (for activities, or workflows: the orchestrator): an unknown host is refused before anything starts. */
export async function hasWorker(
  client: Client,
  namespace: string,
  queue: string,
  type: 'activity' | 'workflow' = 'activity',
): Promise<boolean> {
  const reply = await client.workflowService.describeTaskQueue({
    namespace,
    taskQueue: { name: queue, kind: TASK_QUEUE_KIND_NORMAL },
    taskQueueType: type === 'workflow' ? TASK_QUEUE_TYPE_WORKFLOW : TASK_QUEUE_TYPE_ACTIVITY,
  });
  const pollers = reply.pollers ?? [];
  if (!pollers.length) return false;
  const stopped = await stoppedWorkers(client, namespace, queue);
  // A worker's polls end as it stops, a moment after its last heartbeat; a poll later than that is
  // a worker started again under the same identity.
  return pollers.some(
    (p) => !(p.identity && (stopped.get(p.identity) ?? -Infinity) + POLLS_END_MS >= msOf(p.lastAccessTime)),
  );
}

function msOf(t: { seconds?: unknown; nanos?: number | null } | null | undefined): number {
  return t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : -Infinity;
}

/**
 * When each worker on `queue` that has stopped said so: a worker stopped a moment ago stays among
 * the queue's pollers for minutes, but the heartbeat it sends as it stops says so at once (in the
 * worker's clock). A server that keeps no heartbeats (or refuses to list them) names none, and so
 * does a worker that died without a word: the pollers alone decide then. An identity that runs
 * again is not stopped.
 */
async function stoppedWorkers(client: Client, namespace: string, queue: string): Promise<Map<string, number>> {
  const stopped = new Map<string, number>();
  try {
    const { workersInfo } = await client.workflowService.listWorkers({ namespace, query: `TaskQueue = '${queue}'` });
    const beats = (workersInfo ?? []).flatMap((w) => (w.workerHeartbeat ? [w.workerHeartbeat] : []));
    const running = new Set(
      beats.filter((b) => Number(b.status) === WORKER_STATUS_RUNNING).map((b) => b.workerIdentity),
    );
    for (const b of beats)
      if (b.workerIdentity && !running.has(b.workerIdentity))
        stopped.set(b.workerIdentity, Math.max(stopped.get(b.workerIdentity) ?? -Infinity, msOf(b.heartbeatTime)));
  } catch {
    // No heartbeats on this server: the pollers decide.
  }
  return stopped;
}

/** A queue found polled is taken as polled for this long: a command that reads many times asks the server once. */
const POLLED_FRESH_MS = 10_000;
const polledAt = new WeakMap<Client, Map<string, number>>();

/** The first of the workflow queues no orchestrator has polled lately (the server remembers pollers for minutes), given a moment to one just starting. */
async function unpolled(client: Client, queues: string[]): Promise<string | undefined> {
  const namespace = client.options.namespace;
  const seen = polledAt.get(client) ?? new Map<string, number>();
  polledAt.set(client, seen);
  const deadline = Date.now() + NO_POLLER_GRACE_MS;
  for (;;) {
    const missing = (
      await Promise.all(
        queues.map(async (q) => {
          if (Date.now() - (seen.get(q) ?? -Infinity) < POLLED_FRESH_MS) return undefined;
          if (!(await hasWorker(client, namespace, q, 'workflow'))) return q;
          seen.set(q, Date.now());
          return undefined;
        }),
      )
    ).find(Boolean);
    if (!missing || Date.now() > deadline) return missing;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Gives reads through `client` this bound (the CLI's clients get the command's --answer-timeout). */
export function setAnswerBound(client: Client, timeoutMs: number): void {
  bounds.set(client, timeoutMs);
}

export function answerBound(client: Client): number {
  return bounds.get(client) ?? DEFAULT_ANSWER_TIMEOUT_S * 1000;
}

/** Nobody answered a read in time: an orchestrator is down or cannot keep up. Exit 1, not bad input. */
export class UnavailableError extends Error {
  override readonly name = 'UnavailableError';
}

/** A queue of `queues` no orchestrator has polled lately fails the request at once, naming the queue. */
async function refuseUnpolled(client: Client, what: string, queues: string[]): Promise<void> {
  const nobody = await unpolled(client, [...new Set(queues)]);
  if (nobody) throw unpolledError(what, nobody);
}

function unpolledError(what: string, queue: string): UnavailableError {
  return new UnavailableError(
    `${what} is unavailable: no orchestrator polls the ${queue} queue ('imgflow dev' runs one, or a worker of role orchestrator)`,
  );
}

/** The server refused a query: no worker has polled its queue lately, nor waits on it (FAILED_PRECONDITION). */
function noRecentPoller(err: unknown): boolean {
  for (let e = err as (Error & { code?: unknown }) | undefined; e; e = e.cause as typeof e)
    if (e.code === 9 && /poller/i.test(e.message)) return true;
  return false;
}

/** Nobody answered within the bound; the queues named when known. */
function lateError(what: string, queues: string[], timeoutMs: number): UnavailableError {
  const on = queues.length ? ` on the ${[...new Set(queues)].join(', ')} queue` : '';
  return new UnavailableError(
    `${what} is unavailable: no orchestrator${on} answered within ${timeoutMs / 1000}s, the --answer-timeout bound (is a worker of role orchestrator running? 'imgflow dev' runs one of each role)`,
  );
}

/** gRPC DEADLINE_EXCEEDED and CANCELLED (our own bound), or the server's "no poller seen" (FAILED_PRECONDITION). */
function unanswered(err: unknown): boolean {
  for (let e = err as (Error & { code?: unknown }) | undefined; e; e = e.cause as typeof e) {
    if (e.code === 4 || e.code === 1) return true;
    if (e.code === 9 && /poller|worker/i.test(e.message)) return true;
  }
  return false;
}

/**
 * Runs `read` (one or many queries) within one deadline: past it, or when the server says no worker
 * polls, fails with "<what> is unavailable". With `queues` (the workflows' task queues), a queue no
 * orchestrator has polled lately fails it at once, naming the queue, instead of at the bound.
 * Other errors pass through as they are.
 */
export async function answered<T>(
  client: Client,
  what: string,
  read: () => Promise<T>,
  queues: string[] = [],
): Promise<T> {
  const timeoutMs = answerBound(client);
  await refuseUnpolled(client, what, queues);
  const abort = new AbortController();
  const late = lateError(what, queues, timeoutMs);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(late);
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      client.withAbortSignal(abort.signal, () => client.withDeadline(Date.now() + timeoutMs, read)),
      expired,
    ]);
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    if (noRecentPoller(err) && queues.length) throw unpolledError(what, [...new Set(queues)].join(', '));
    if (unanswered(err)) throw late;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends an update and waits for its outcome. An orchestrator of the workflow's queue must take it
 * (run its validator and accept or refuse it) within the answer bound: a queue no orchestrator has
 * polled lately fails at once, and an update nobody takes within the bound fails then, both in one
 * line naming the queue. Once accepted, the update's work takes as long as it takes. `send` starts
 * the update, waiting for its ACCEPTED stage.
 */
export async function updated<T>(
  client: Client,
  what: string,
  queue: string,
  send: () => Promise<WorkflowUpdateHandle<T>>,
): Promise<T> {
  const timeoutMs = answerBound(client);
  await refuseUnpolled(client, what, [queue]);
  let handle: WorkflowUpdateHandle<T>;
  try {
    handle = await client.withDeadline(Date.now() + timeoutMs, send);
  } catch (err) {
    if (unanswered(err)) throw lateError(what, [queue], timeoutMs);
    throw err;
  }
  return handle.result();
}

/** An update of a running workflow, sent as `updated` sends it, on the queue the workflow runs on. */
export async function sendUpdate<Ret, Args extends [unknown, ...unknown[]]>(
  client: Client,
  handle: WorkflowHandle,
  what: string,
  update: UpdateDefinition<Ret, Args>,
  ...args: Args
): Promise<Ret> {
  const { taskQueue } = await handle.describe();
  return updated(client, what, taskQueue, () => handle.startUpdate(update, { args, waitForStage: 'ACCEPTED' }));
}

/** The call failed because the server went away (restarting, or the network between): not the workflow's answer. */
export function lostServer(err: unknown): boolean {
  for (let e = err as (Error & { code?: unknown }) | undefined; e; e = e.cause as typeof e) {
    // CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, INTERNAL (a reset stream), UNAVAILABLE.
    if (typeof e.code === 'number' && [1, 2, 4, 13, 14].includes(e.code)) return true;
  }
  return false;
}

/**
 * The workflow's real outcome: its result, or the failure it ended with. When the server goes away
 * meanwhile the client reconnects, with backoff, and waits again; it gives up only when the server
 * has been out of reach for longer than `lossBoundMs` at a stretch, and then says the workflow may
 * still finish.
 */
export async function outcomeOf<T>(handle: WorkflowHandle, lossBoundMs: number, what: string): Promise<T> {
  let lostAt: number | undefined;
  for (let pause = 250; ; pause = Math.min(pause * 2, 4000)) {
    try {
      return (await handle.result()) as T;
    } catch (err) {
      if (!lostServer(err)) throw err;
      lostAt ??= Date.now();
      // Back within reach: the outage is over, whatever comes next is a new one.
      const back = await handle.client
        .withDeadline(Date.now() + 2000, () => handle.describe())
        .then(
          () => true,
          () => false,
        );
      if (back) {
        lostAt = undefined;
        pause = 250;
        continue;
      }
      if (Date.now() - lostAt > lossBoundMs) {
        throw new Error(
          `lost the Temporal server for more than ${lossBoundMs / 1000}s, the --connect-timeout bound, while waiting for ${what}; it may still finish (${oneLineOf(err)})`,
        );
      }
      await new Promise((r) => setTimeout(r, pause));
    }
  }
}

function oneLineOf(err: unknown): string {
  return (err as Error).message.split('\n')[0]!.replace(/^\d+ [A-Z_]+: /, '');
}
