/**
 * Image-list subscriptions. One entity workflow per subscription keeps its settings (never a
 * secret), the list version last applied, each image's state and a history; it changes through
 * validated Updates and signals, and runs each sync as a child workflow, one at a time. A Temporal
 * Schedule (overlap SKIP) starts a tick workflow that only asks the entity for a sync.
 *
 * A sync fetches and verifies the list on `control`, compares it with the registry on
 * `cloud.<site>`, downloads only what changed and swaps each changed image as a saga: every step
 * done is undone in reverse when a later one fails, so the old image is back under its name with
 * its access and no half-registered successor is left.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  executeChild,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { checkReason, checkUser } from '../../common/lineage.js';
import { SA } from '../../common/search-attributes.js';
import { Outbox } from '../events/outbox.js';
import { historyFull } from '../support/continue-as-new.js';
import { handleUpdate } from '../support/updates.js';
import {
  adoptUpdate,
  appliancesQuery,
  describeQuery,
  historyQuery,
  subscriptionWorkflowId,
  syncRequestSignal,
  syncUpdate,
  unsubscribeUpdate,
  type SubscriptionInput,
  type SubscriptionView,
  type SyncOutcome,
} from './messages.js';
import { message } from './notes.js';
import { startingState, Subscription } from './subscription.js';
import { subscriptionSyncWorkflow } from './sync-workflow.js';

interface QueuedRun {
  id: number;
  by: string;
  reason: string;
  adopt: boolean;
}

export async function subscriptionWorkflow(input: SubscriptionInput): Promise<SubscriptionView> {
  const sub = new Subscription(input.state ?? startingState(input.config));
  const outbox = new Outbox(() => ({ entity: 'subscription', subscription: sub.state.config.name }));
  sub.onRecord = (entry) => outbox.add(entry);
  const name = sub.state.config.name;
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  const queue: QueuedRun[] = [];
  const finished = new Map<number, SyncOutcome>();
  let running: QueuedRun | undefined;
  let nextRequest = 0;
  let stopping = false;
  let stoppedBy = '';
  let stopped = false;
  const now = () => new Date().toISOString();
  upsertSearchAttributes([
    { key: SA.kind, value: 'subscription' },
    { key: SA.subscription, value: name },
  ]);

  /** Queues a run, or joins a plain sync already waiting: requests made before a run starts share it. */
  const enqueue = (by: string, reason: string, adopt: boolean): number => {
    const waiting = queue.find((q) => !q.adopt && !adopt);
    if (waiting) return waiting.id;
    const id = ++nextRequest;
    queue.push({ id, by, reason, adopt });
    return id;
  };
  const outcomeOf = async (id: number): Promise<SyncOutcome> => {
    await condition(() => finished.has(id));
    const outcome = finished.get(id)!;
    finished.delete(id);
    return outcome;
  };

  handleUpdate(
    syncUpdate,
    (request) => void checkUser('by', request?.by),
    (request) => outcomeOf(enqueue(request.by, 'sync requested', false)),
  );
  handleUpdate(
    adoptUpdate,
    (request) => sub.validateAdopt(request),
    (request) => outcomeOf(enqueue(request.by, 'adopt', true)),
  );
  handleUpdate(
    unsubscribeUpdate,
    (request) => {
      checkUser('by', request?.by);
      if (request.reason !== undefined) checkReason('reason', request.reason);
    },
    async (request) => {
      sub.record(request.by, 'unsubscribe', request.reason ?? 'unsubscribed', now());
      stopping = true;
      stoppedBy = request.by;
      // Until the running sync ended and nothing staged is left behind.
      await condition(() => stopped);
      return sub.view(false);
    },
  );
  setHandler(syncRequestSignal, (request) => {
    const at = now();
    try {
      const by = checkUser('by', request?.by);
      const reason = checkReason('reason', request?.reason);
      if (request.skipIfBusy && (running || queue.length))
        sub.record(by, 'skipped', `${reason}: a sync is already running`, at);
      else enqueue(by, reason, false);
    } catch (err) {
      sub.record('unknown', 'rejected-signal', `syncRequest: ${(err as Error).message}`, at);
    }
  });
  setHandler(describeQuery, () => sub.view(running !== undefined));
  setHandler(appliancesQuery, () =>
    Object.values(sub.state.images).sort((a, b) => a.identifier.localeCompare(b.identifier)),
  );
  setHandler(historyQuery, ({ last }) => sub.state.history.slice(-(last ?? sub.state.history.length)));

  /** Removes what is staged, in a run of its own; nothing happens (no command) when nothing is. */
  const discardStaged = async (by: string, reason: string): Promise<void> => {
    const discardInput = sub.discardInput();
    if (!discardInput) return;
    const run = ++sub.state.runs;
    try {
      const result = await executeChild(subscriptionSyncWorkflow, {
        workflowId: `${subscriptionWorkflowId(name)}-sync-${run}`,
        args: [discardInput],
        staticSummary: `Discard the staged images of subscription ${name}`,
      });
      sub.discarded(by, reason, result, now());
    } catch (error) {
      sub.record(by, 'unstage-failed', `${reason}: ${message(error)}`, now());
    }
  };

  const runOnce = async (request: QueuedRun): Promise<SyncOutcome> => {
    const run = ++sub.state.runs;
    const mode = sub.state.config.stage && !request.adopt ? 'dry-run' : 'apply';
    sub.record(request.by, 'sync', `run ${run} (${mode}): ${request.reason}`, now());
    try {
      const result = await executeChild(subscriptionSyncWorkflow, {
        workflowId: `${subscriptionWorkflowId(name)}-sync-${run}`,
        args: [sub.syncInput(mode, request.adopt)],
        staticSummary: `Sync of subscription ${name} (${mode})`,
      });
      return sub.applyResult(run, request.by, result, now());
    } catch (error) {
      const refused = sub.refused(run, request.by, message(error), now());
      // What an earlier list staged cannot be adopted once a list is refused: nothing stays behind.
      await discardStaged(request.by, 'the list was refused');
      return refused;
    }
  };

  while (!stopping) {
    await condition(() => queue.length > 0 || stopping || historyFull(maxHistory));
    if (queue.length === 0 || stopping) {
      if (stopping) break;
      await condition(() => allHandlersFinished() && outbox.idle);
      await continueAsNew<typeof subscriptionWorkflow>({ ...input, state: sub.state });
    }
    running = queue.shift()!;
    const outcome = await runOnce(running);
    sub.state.lastSync = outcome;
    finished.set(running.id, outcome);
    running = undefined;
  }
  // Runs still queued will not happen: their callers learn so instead of waiting forever.
  for (const request of queue.splice(0))
    finished.set(request.id, {
      run: 0,
      at: now(),
      by: request.by,
      status: 'skipped',
      reason: 'the subscription was removed',
    });
  await discardStaged(stoppedBy, 'unsubscribed');
  stopped = true;
  await condition(() => allHandlersFinished() && outbox.idle);
  return sub.view(false);
}
