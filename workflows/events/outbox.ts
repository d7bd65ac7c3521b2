/**
 * How an entity hands its events on: each history entry it records is queued here, and what one
 * activation queued goes to the events workflow in one signal. An entity that finds no events
 * workflow running starts it, with those events as its first, and lets it outlive the entity.
 */
import {
  getExternalWorkflowHandle,
  log,
  ParentClosePolicy,
  patched,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { eventOf, type EventContext, type EventEnvelope, type EventSource } from '../../common/events.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { failureMessage } from '../support/failures.js';
import { EVENTS_WORKFLOW_ID, eventsSignal } from './messages.js';
import { eventsWorkflow } from './workflow.js';

/** Entities that ran before events existed send none, so their saved histories replay. */
export const EMITS_EVENTS = 'emits-events';
const BATCH_MAX = 100;

/** The most events a run hands to the next (far more than one task records). */
const HANDED_ON_MAX = 500;

export class Outbox {
  private queued: EventEnvelope[] = [];
  private sending = false;
  private held = false;

  /** `handedOn`: what the run before held back, sent first. */
  constructor(
    private readonly source: () => EventSource,
    handedOn: EventEnvelope[] = [],
  ) {
    if (handedOn.length) {
      this.queued.push(...handedOn.slice(-HANDED_ON_MAX));
      void this.send();
    }
  }

  /** Queues the event of a history entry just recorded. */
  add(entry: { seq: number; at: string; by: string; op: string; detail: string }, context?: EventContext): void {
    this.queued.push(eventOf(workflowInfo().workflowId, this.source(), entry, context));
    if (!this.sending && !this.held) void this.send();
  }

  /** Nothing queued or on its way: the entity may end. */
  get idle(): boolean {
    return !this.sending && this.queued.length === 0;
  }

  /**
   * Before continuing as new: no new signal starts, so the one on its way settles and the run can
   * end without its outcome arriving after (which would refuse the continue-as-new). Waiting for
   * the queue to empty instead would never end while requests keep coming.
   */
  hold(): void {
    this.held = true;
  }

  get settled(): boolean {
    return !this.sending;
  }

  /** What a held outbox hands to the next run. */
  handOver(): EventEnvelope[] | undefined {
    return this.queued.length ? this.queued : undefined;
  }

  private async send(): Promise<void> {
    this.sending = true;
    try {
      // Let the rest of this activation queue its entries first: one signal for all of them.
      await Promise.resolve();
      while (this.queued.length && !this.held) {
        const batch = this.queued.splice(0, BATCH_MAX);
        if (patched(EMITS_EVENTS)) await deliver(batch);
      }
    } finally {
      this.sending = false;
    }
  }
}

/** Signals the events workflow, starting it when it is not running; a failure is logged, never thrown. */
async function deliver(batch: EventEnvelope[]): Promise<void> {
  const signal = () => getExternalWorkflowHandle(EVENTS_WORKFLOW_ID).signal(eventsSignal, batch);
  try {
    await signal().catch(async () => {
      const started = await startChild(eventsWorkflow, {
        workflowId: EVENTS_WORKFLOW_ID,
        // Not the entity's own queue (a child's default): the events workflow must outlive it wherever it runs.
        taskQueue: WORKFLOW_QUEUE,
        args: [{ first: batch }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        staticSummary: 'imgflow events and notifications',
      }).catch((err: unknown) => {
        if (err instanceof WorkflowExecutionAlreadyStartedError) return undefined;
        throw err;
      });
      // Another entity started it first: it takes these events as a signal after all.
      if (!started) await signal();
    });
  } catch (err) {
    log.warn('events not handed on', { events: batch.length, error: failureMessage(err) });
  }
}
