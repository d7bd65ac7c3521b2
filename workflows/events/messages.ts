/**
 * The contract of the events workflow: the one workflow of a namespace that keeps the newest
 * events and the notification rules, and starts a delivery for each event a rule wants.
 * What the CLI and the entities import.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { EventEnvelope, EventsRequest, ImgflowEvent, NotifyRule, NotifyTarget } from '../../common/events.js';

export type { EventsRequest } from '../../common/events.js';

export const EVENTS_WORKFLOW_ID = 'imgflow-events';

/** Events from an entity, in the order it recorded them. */
export const eventsSignal = defineSignal<[EventEnvelope[]]>('events');

/** A delivery's outcome, from its own workflow. */
export const deliveredSignal = defineSignal<[DeliveryOutcome]>('delivered');

export type RuleInput = Omit<NotifyRule, 'name' | 'at'> & { name?: string };
export const addRuleUpdate = defineUpdate<NotifyRule, [RuleInput]>('addRule');
export const removeRuleUpdate = defineUpdate<NotifyRule, [{ name: string; by: string }]>('removeRule');

export const rulesQuery = defineQuery<RuleView[]>('rules');
export const eventsQuery = defineQuery<ImgflowEvent[], [EventsRequest]>('events');

export interface DeliveryOutcome {
  rule: string;
  eventId: string;
  ok: boolean;
  at: string;
  error?: string;
}

export interface DeliveryStats {
  delivered: number;
  failed: number;
  last?: DeliveryOutcome;
}

export type RuleView = NotifyRule & DeliveryStats;

export interface EventsState {
  rules: Record<string, NotifyRule>;
  stats: Record<string, DeliveryStats>;
  recent: ImgflowEvent[];
  /** For the names of rules added without one. */
  seq: number;
}

export interface EventsInput {
  state?: EventsState;
  /** Events handed over by the entity that found the workflow not yet running. */
  first?: EventEnvelope[];
  maxHistoryEvents?: number;
}

export interface DeliveryInput {
  rule: string;
  target: NotifyTarget;
  event: ImgflowEvent;
  /** Seconds the delivery keeps trying. */
  deliverFor: number;
}
