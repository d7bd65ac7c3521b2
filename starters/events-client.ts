/**
 * The CLI's way to events and notification rules: the events workflow is started by the first
 * rule added or the first event an entity hands on, whichever comes first; reading it before
 * either finds nothing, which is an empty answer, not an error.
 */
import type { Client } from '@temporalio/client';
import type { QueryDefinition } from '@temporalio/common';
import { describeTarget, type ImgflowEvent, type NotifyRule } from '../common/events.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import {
  addRuleUpdate,
  EVENTS_WORKFLOW_ID,
  eventsQuery,
  removeRuleUpdate,
  rulesQuery,
  type EventsRequest,
  type RuleInput,
  type RuleView,
} from '../workflows/events/messages.js';
import { eventsWorkflow } from '../workflows/events/workflow.js';
import { answered, updated } from './answers.js';
import { formatTable } from './output.js';
import { sdk } from './sdk.js';

const WHAT = 'the events workflow';

export async function addRule(client: Client, input: RuleInput): Promise<NotifyRule> {
  const start = new sdk.WithStartWorkflowOperation(eventsWorkflow, {
    workflowId: EVENTS_WORKFLOW_ID,
    taskQueue: WORKFLOW_QUEUE,
    args: [{}],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [{ key: SA.kind, value: 'events' }],
    staticSummary: 'imgflow events and notifications',
  });
  return updated(client, WHAT, WORKFLOW_QUEUE, () =>
    client.workflow.startUpdateWithStart(addRuleUpdate, {
      args: [input],
      startWorkflowOperation: start,
      waitForStage: 'ACCEPTED',
    }),
  );
}

export async function removeRule(client: Client, name: string, by: string): Promise<NotifyRule> {
  const handle = client.workflow.getHandle(EVENTS_WORKFLOW_ID);
  return updated(client, WHAT, WORKFLOW_QUEUE, () =>
    handle.startUpdate(removeRuleUpdate, { args: [{ name, by }], waitForStage: 'ACCEPTED' }),
  ).catch((err: unknown) => {
    if ((err as Error).name === 'WorkflowNotFoundError')
      throw new Error(`no notification rule is named ${name} (there are none yet)`);
    throw err;
  });
}

async function read<R, A extends unknown[]>(
  client: Client,
  query: QueryDefinition<R, A>,
  empty: R,
  ...args: A
): Promise<R> {
  const handle = client.workflow.getHandle(EVENTS_WORKFLOW_ID);
  return answered(client, WHAT, () => handle.query(query, ...args), [WORKFLOW_QUEUE]).catch((err: unknown) => {
    if ((err as Error).name === 'WorkflowNotFoundError') return empty;
    throw err;
  });
}

export const listRules = (client: Client): Promise<RuleView[]> => read(client, rulesQuery, []);

export function listEvents(client: Client, request: EventsRequest): Promise<ImgflowEvent[]> {
  return read(client, eventsQuery, [], request);
}

export function formatRules(rules: RuleView[]): string {
  if (!rules.length) return 'no notification rules (imgflow notify add)';
  return formatTable(
    rules.map((r) => ({
      name: r.name,
      target: describeTarget(r.target),
      events: r.events?.join(',') ?? '*',
      image: r.image ?? '*',
      delivered: r.delivered,
      failed: r.failed,
      last: r.last ? `${r.last.ok ? 'ok' : `failed: ${r.last.error ?? ''}`} (${r.last.eventId})` : '',
    })),
    ['name', 'target', 'events', 'image', 'delivered', 'failed', 'last'],
  );
}

export function formatEvents(events: ImgflowEvent[]): string {
  if (!events.length) return 'no events';
  return formatTable(
    events.map((e) => ({
      at: e.at,
      type: e.type,
      about: e.volume ?? e.subscription ?? e.image ?? '',
      by: e.by,
      detail: e.detail,
    })),
    ['at', 'type', 'about', 'by', 'detail'],
  );
}
