/**
 * Reads from workflows (queries) that say so when nobody answers. A query is answered by an
 * orchestrator worker; when none runs, the server holds the call until a deadline, and a listing
 * that skipped what did not answer would print an empty map as if it were the truth. Every read
 * here has one bound for the whole command (the client's --answer-timeout), and a read that is not
 * answered within it fails in one line saying what is unavailable.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import { DEFAULT_ANSWER_TIMEOUT_S } from '../lib/config.js';

const bounds = new WeakMap<Client, number>();

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
 * polls, fails with "<what> is unavailable". Other errors pass through as they are.
 */
export async function answered<T>(client: Client, what: string, read: () => Promise<T>): Promise<T> {
  const timeoutMs = answerBound(client);
  const abort = new AbortController();
  const late = new UnavailableError(`${what} is unavailable: no orchestrator answered within ${timeoutMs / 1000}s, the --answer-timeout bound (is a worker of role orchestrator running? 'imgflow dev' runs one of each role)`);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(late);
    }, timeoutMs);
  });
  try {
    return await Promise.race([client.withAbortSignal(abort.signal, () => client.withDeadline(Date.now() + timeoutMs, read)), expired]);
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    if (unanswered(err)) throw late;
    throw err;
  } finally {
    clearTimeout(timer);
  }
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
      const back = await handle.client.withDeadline(Date.now() + 2000, () => handle.describe()).then(
        () => true,
        () => false,
      );
      if (back) {
        lostAt = undefined;
        pause = 250;
        continue;
      }
      if (Date.now() - lostAt > lossBoundMs) {
        throw new Error(`lost the Temporal server for more than ${lossBoundMs / 1000}s, the --connect-timeout bound, while waiting for ${what}; it may still finish (${oneLineOf(err)})`);
      }
      await new Promise((r) => setTimeout(r, pause));
    }
  }
}

function oneLineOf(err: unknown): string {
  return (err as Error).message.split('\n')[0]!.replace(/^\d+ [A-Z_]+: /, '');
}
