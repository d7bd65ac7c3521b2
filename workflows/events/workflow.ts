/**
 * The events workflow: one per namespace, started by the first entity with an event to hand on.
 * It keeps the newest events for `imgflow events`, holds the notification rules, and starts one
 * delivery workflow per event and target, which outlives it: a delivery may retry for hours while
 * this workflow continues as new.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  ParentClosePolicy,
  setHandler,
  startChild,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { SA } from '../../common/search-attributes.js';
import { historyFull } from '../support/continue-as-new.js';
import { failureMessage } from '../support/failures.js';
import { handleUpdate } from '../support/updates.js';
import { deliveryWorkflow } from './delivery-workflow.js';
import { Events, newEventsState } from './events.js';
import {
  addRuleUpdate,
  deliveredSignal,
  eventsQuery,
  eventsSignal,
  removeRuleUpdate,
  rulesQuery,
  type DeliveryInput,
  type EventsInput,
} from './messages.js';

export async function eventsWorkflow(input: EventsInput = {}): Promise<void> {
  const events = new Events(input.state ?? newEventsState());
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  let starting = 0;
  upsertSearchAttributes([{ key: SA.kind, value: 'events' }]);

  const deliver = async (d: DeliveryInput) => {
    starting++;
    try {
      await startChild(deliveryWorkflow, {
        // One delivery per event and target, however often the event arrives.
        workflowId: `notify-${d.rule}-${d.event.id}`,
        args: [d],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        typedSearchAttributes: [
          { key: SA.kind, value: 'delivery' },
          ...(d.event.image ? [{ key: SA.image, value: d.event.image }] : []),
        ],
        staticSummary: `${d.event.type} to ${d.rule}`,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError))
        log.warn('delivery not started', { rule: d.rule, event: d.event.id, error: failureMessage(err) });
    } finally {
      starting--;
    }
  };
  const take = (batch: Parameters<Events['accept']>[0]) => {
    const { deliveries, dropped } = events.accept(batch);
    if (dropped) log.warn('events dropped as malformed or already seen', { dropped });
    for (const d of deliveries) void deliver(d);
  };

  setHandler(eventsSignal, take);
  setHandler(deliveredSignal, (outcome) => events.delivered(outcome));
  handleUpdate(
    addRuleUpdate,
    (i) => events.validateRule(i),
    (i) => {
      events.validateRule(i);
      return events.addRule(i, new Date().toISOString());
    },
  );
  handleUpdate(
    removeRuleUpdate,
    (i) => events.validateRemove(i),
    (i) => {
      events.validateRemove(i);
      return events.removeRule(i);
    },
  );
  setHandler(rulesQuery, () => events.rules());
  setHandler(eventsQuery, (request) => events.list(request));
  if (input.first) take(input.first);

  await condition(() => historyFull(maxHistory));
  await condition(() => allHandlersFinished() && starting === 0);
  await continueAsNew<typeof eventsWorkflow>({ ...input, first: undefined, state: events.state });
}
