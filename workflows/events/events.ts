/** The rules of the events workflow over its state: which events it keeps, and which deliveries each one needs. */
import {
  checkEventsRequest,
  checkRuleInput,
  DEFAULT_DELIVER_FOR,
  EVENT_SCHEMA,
  RECENT_KEEP,
  ruleWants,
  targetKey,
  typeMatches,
  type EventEnvelope,
  type EventsRequest,
  type ImgflowEvent,
  type NotifyRule,
} from '../../common/events.js';
import { checkName, InputError } from '../../common/names.js';
import { checkUser } from '../../common/lineage.js';
import {
  type DeliveryInput,
  type DeliveryOutcome,
  type EventsState,
  type RuleInput,
  type RuleView,
} from './messages.js';

export const RULES_MAX = 100;
const ID = /^[A-Za-z0-9._-]{1,300}#[0-9]{1,12}$/;

export const newEventsState = (): EventsState => ({ rules: {}, stats: {}, recent: [], seq: 0 });

/** An entity's event, checked in shape: a signal has no validator, so what is malformed is dropped here. */
function wellFormed(e: EventEnvelope): boolean {
  const ev = e?.event;
  return (
    ev?.schema === EVENT_SCHEMA &&
    typeof ev.id === 'string' &&
    ID.test(ev.id) &&
    typeof ev.type === 'string' &&
    typeof ev.detail === 'string' &&
    typeof ev.at === 'string'
  );
}

export class Events {
  private readonly seen: Set<string>;

  constructor(readonly state: EventsState) {
    this.seen = new Set(state.recent.map((e) => e.id));
  }

  /** Keeps the new, well-formed events and returns the deliveries they need. */
  accept(batch: EventEnvelope[]): { deliveries: DeliveryInput[]; dropped: number } {
    const fresh = (Array.isArray(batch) ? batch : []).filter((e) => wellFormed(e) && !this.seen.has(e.event.id));
    const dropped = (Array.isArray(batch) ? batch.length : 1) - fresh.length;
    const deliveries: DeliveryInput[] = [];
    for (const { event, notify } of fresh) {
      this.keep(event);
      for (const rule of Object.values(this.state.rules))
        if (ruleWants(rule, event))
          deliveries.push({ rule: rule.name, target: rule.target, event, deliverFor: rule.deliverFor });
      for (const target of notify ?? [])
        deliveries.push({ rule: targetKey(target), target, event, deliverFor: DEFAULT_DELIVER_FOR });
    }
    return { deliveries, dropped };
  }

  private keep(event: ImgflowEvent): void {
    const recent = this.state.recent;
    recent.push(event);
    this.seen.add(event.id);
    if (recent.length > RECENT_KEEP)
      for (const old of recent.splice(0, recent.length - RECENT_KEEP)) this.seen.delete(old.id);
  }

  delivered(o: DeliveryOutcome): void {
    if (typeof o?.rule !== 'string' || typeof o.ok !== 'boolean') return;
    // A request's own target has no rule: its outcome shows in its delivery workflow only.
    if (!this.state.rules[o.rule]) return;
    const stats = (this.state.stats[o.rule] ??= { delivered: 0, failed: 0 });
    if (o.ok) stats.delivered++;
    else stats.failed++;
    stats.last = o;
  }

  validateRule(input: RuleInput): void {
    checkUser('by', input.by);
    checkRuleInput(input);
    if (input.name !== undefined && this.state.rules[input.name])
      throw new InputError('name', 'a name no other notification rule has', input.name);
    if (Object.keys(this.state.rules).length >= RULES_MAX)
      throw new InputError('rules', `at most ${RULES_MAX} notification rules (remove one first)`, RULES_MAX + 1);
  }

  addRule(input: RuleInput, at: string): NotifyRule {
    const name = input.name ?? this.freeName();
    const rule: NotifyRule = { ...input, name, at };
    this.state.rules[name] = rule;
    this.state.stats[name] = { delivered: 0, failed: 0 };
    return rule;
  }

  private freeName(): string {
    let name: string;
    do name = `rule-${++this.state.seq}`;
    while (this.state.rules[name]);
    return name;
  }

  validateRemove(input: { name: string; by: string }): void {
    checkUser('by', input.by);
    if (!this.state.rules[checkName('name', input.name)])
      throw new InputError(
        'name',
        `a notification rule (${Object.keys(this.state.rules).join(', ') || 'none'})`,
        input.name,
      );
  }

  removeRule(input: { name: string }): NotifyRule {
    const rule = this.state.rules[input.name]!;
    delete this.state.rules[input.name];
    delete this.state.stats[input.name];
    return rule;
  }

  rules(): RuleView[] {
    return Object.values(this.state.rules).map((r) => ({
      ...r,
      ...(this.state.stats[r.name] ?? { delivered: 0, failed: 0 }),
    }));
  }

  /** The newest events that match, oldest first. */
  list(request: EventsRequest = {}): ImgflowEvent[] {
    checkEventsRequest(request);
    const since = request.since === undefined ? undefined : Date.parse(request.since);
    const found = this.state.recent.filter(
      (e) =>
        (request.image === undefined || e.image === request.image) &&
        (since === undefined || Date.parse(e.at) >= since) &&
        (!request.types || request.types.some((t) => typeMatches(e.type, t))),
    );
    return found.slice(-(request.limit ?? RECENT_KEEP));
  }
}
