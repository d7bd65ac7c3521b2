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
import { failureMessage } from '../support/failures.js';
import { EVENTS_WORKFLOW_ID, eventsSignal } from './messages.js';
import { eventsWorkflow } from './workflow.js';

/** Entities that ran before events existed send none, so their saved histories replay. */
export const EMITS_EVENTS = 'emits-events';
const BATCH_MAX = 100;

export class Outbox {
  private queued: EventEnvelope[] = [];
  private sending = false;

  constructor(private readonly source: () => EventSource) {}

  /** Queues the event of a history entry just recorded. */
  add(entry: { seq: number; at: string; by: string; op: string; detail: string }, context?: EventContext): void {
    this.queued.push(eventOf(workflowInfo().workflowId, this.source(), entry, context));
    if (!this.sending) void this.send();
  }

  /** Nothing queued or on its way: the entity may continue as new or end. */
  get idle(): boolean {
    return !this.sending && this.queued.length === 0;
  }

  private async send(): Promise<void> {
    this.sending = true;
    try {
      // Let the rest of this activation queue its entries first: one signal for all of them.
      await Promise.resolve();
      while (this.queued.length) {
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
