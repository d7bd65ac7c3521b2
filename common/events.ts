/**
 * Events: every entry an entity records in its history (a lineage, a volume, a subscription) is
 * also an event with one stable JSON shape, and notification targets choose which they receive.
 * Pure code, for workflows, activities and starters alike.
 */
import { clip } from './limits.js';
import { checkInt, checkName, InputError } from './names.js';

export const EVENT_SCHEMA = 'imgflow.event/1';

/** What an event is about: the noun of its type. */
export const EVENT_NOUNS = ['image', 'build', 'volume', 'subscription'] as const;
export type EventNoun = (typeof EVENT_NOUNS)[number];

/** The stable shape every receiver (webhook, e-mail, `imgflow events --json`) gets. */
export interface ImgflowEvent {
  schema: typeof EVENT_SCHEMA;
  /** `<workflow id>#<sequence>`: unique, and the same on every delivery of the event. */
  id: string;
  /** `<noun>.<operation>`, e.g. `image.promote`, `build.failed`, `volume.mapped`, `subscription.refused`. */
  type: string;
  at: string;
  by: string;
  image?: string;
  build?: string;
  volume?: string;
  subscription?: string;
  /** What the entity recorded, in one line (clipped). */
  detail: string;
}

/** The most of an event's detail that travels; the entity's own history keeps the whole entry. */
export const EVENT_DETAIL_MAX = 1000;

/** Which entity recorded an entry, as the event's subject. */
export type EventSource =
  | { entity: 'lineage'; image: string }
  | { entity: 'volume'; volume: string; image?: string }
  | { entity: 'subscription'; subscription: string };

/** Ties an entry to a build, whose own notification targets then receive it too. */
export interface EventContext {
  build?: string;
  notify?: NotifyTarget[];
}

/** What an entity hands the events workflow: the event and the targets of the request it is about. */
export interface EventEnvelope {
  event: ImgflowEvent;
  notify?: NotifyTarget[];
}

/** The event type of an entity's history entry: a lineage's builds are events of their own noun. */
export function eventType(source: EventSource, op: string, context?: EventContext): string {
  if (source.entity === 'lineage') {
    if (op.startsWith('build-')) return `build.${op.slice('build-'.length)}`;
    if (op === 'register' && context?.build) return 'build.finished';
    return `image.${op}`;
  }
  return `${source.entity}.${op}`;
}

/** The event of one history entry. */
export function eventOf(
  workflowId: string,
  source: EventSource,
  entry: { seq: number; at: string; by: string; op: string; detail: string },
  context?: EventContext,
): EventEnvelope {
  const subject =
    source.entity === 'lineage'
      ? { image: source.image }
      : source.entity === 'volume'
        ? { volume: source.volume, ...(source.image ? { image: source.image } : {}) }
        : { subscription: source.subscription };
  const event: ImgflowEvent = {
    schema: EVENT_SCHEMA,
    id: `${workflowId}#${entry.seq}`,
    type: eventType(source, entry.op, context),
    at: entry.at,
    by: entry.by,
    ...subject,
    ...(context?.build ? { build: context.build } : {}),
    detail: clip(entry.detail, EVENT_DETAIL_MAX),
  };
  return context?.notify?.length ? { event, notify: context.notify } : { event };
}

/* ----- notification targets ----- */

/** Where events go: a webhook (signed when it has a secret) or an e-mail address. */
export type NotifyTarget = { webhook: string; secretFile?: string } | { email: string };

/** A named target with its filters, as `imgflow notify add` records it. */
export interface NotifyRule {
  name: string;
  target: NotifyTarget;
  /** Event type patterns (`image.promote`, `build.*`); all events when absent. */
  events?: string[];
  /** Only events about this image (its lineage, builds, volumes). */
  image?: string;
  /** How long a delivery keeps trying before it is given up, in seconds. */
  deliverFor: number;
  by: string;
  at: string;
}

export const URL_MAX = 2048;
export const EMAIL_MAX = 254;
export const PATH_MAX = 1024;
export const RULE_EVENTS_MAX = 32;
/** Targets a build request may name for itself. */
export const REQUEST_TARGETS_MAX = 3;
export const DEFAULT_DELIVER_FOR = 3600;
export const DELIVER_FOR_MAX = 7 * 24 * 3600;

// No credentials in the authority: a URL is recorded in payloads and printed; secrets go in a file.
const WEBHOOK = /^https?:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?(\/[\x21-\x7e]*)?$/;
const EMAIL = /^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;
const SECRET_FILE = /^\/[A-Za-z0-9._/-]+$/;
const PATTERN = new RegExp(`^(\\*|(${EVENT_NOUNS.join('|')})\\.(\\*|[a-z][a-z-]{0,39}))$`);

export function checkWebhook(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length > URL_MAX || !WEBHOOK.test(value))
    throw new InputError(field, `an http(s) URL of at most ${URL_MAX} characters, without user or password`, value);
  return value;
}

export function checkEmail(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length > EMAIL_MAX || !EMAIL.test(value))
    throw new InputError(field, `an e-mail address (user@domain) of at most ${EMAIL_MAX} characters`, value);
  return value;
}

/** The secret's file is named, never read here: only the worker that delivers reads it. */
export function checkSecretFile(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length > PATH_MAX || !SECRET_FILE.test(value) || value.includes('..'))
    throw new InputError(field, 'an absolute path of letters, digits, ., _, - and /', value);
  return value;
}

export function checkTarget(field: string, value: unknown): NotifyTarget {
  const t = value as Record<string, unknown> | undefined;
  if (t && typeof t === 'object' && 'webhook' in t) {
    const webhook = checkWebhook(`${field}.webhook`, t.webhook);
    return t.secretFile === undefined
      ? { webhook }
      : { webhook, secretFile: checkSecretFile(`${field}.secretFile`, t.secretFile) };
  }
  if (t && typeof t === 'object' && 'email' in t) return { email: checkEmail(`${field}.email`, t.email) };
  throw new InputError(field, 'a webhook URL or an e-mail address', value);
}

/** A `--notify` value: an e-mail address, or a webhook URL. */
export function parseTarget(field: string, value: string): NotifyTarget {
  return value.includes('://') ? { webhook: checkWebhook(field, value) } : { email: checkEmail(field, value) };
}

export function checkTargets(field: string, value: unknown): NotifyTarget[] {
  if (!Array.isArray(value) || value.length > REQUEST_TARGETS_MAX)
    throw new InputError(field, `a list of at most ${REQUEST_TARGETS_MAX} targets`, value);
  return value.map((t, i) => checkTarget(`${field}[${i}]`, t));
}

export function checkPatterns(field: string, value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > RULE_EVENTS_MAX)
    throw new InputError(field, `1-${RULE_EVENTS_MAX} event types`, value);
  for (const p of value)
    if (typeof p !== 'string' || !PATTERN.test(p))
      throw new InputError(
        field,
        `event types such as image.promote, build.* or * (nouns: ${EVENT_NOUNS.join(', ')})`,
        p,
      );
  return value as string[];
}

export function checkRuleInput(input: Omit<NotifyRule, 'name' | 'at'> & { name?: string }): void {
  if (input.name !== undefined) checkName('name', input.name);
  checkTarget('target', input.target);
  if (input.events !== undefined) checkPatterns('events', input.events);
  if (input.image !== undefined) checkName('image', input.image);
  checkInt('deliverFor', input.deliverFor, 10, DELIVER_FOR_MAX);
}

/** Whether an event type matches a pattern: exact, `noun.*` or `*`. */
export function typeMatches(type: string, pattern: string): boolean {
  if (pattern === '*' || pattern === type) return true;
  return pattern.endsWith('.*') && type.startsWith(pattern.slice(0, -1));
}

export function ruleWants(rule: Pick<NotifyRule, 'events' | 'image'>, event: ImgflowEvent): boolean {
  if (rule.image !== undefined && event.image !== rule.image) return false;
  return !rule.events || rule.events.some((p) => typeMatches(event.type, p));
}

/** How a target prints: the URL or the address (a secret's file is named, never its content). */
export function describeTarget(t: NotifyTarget): string {
  return 'email' in t ? `mailto:${t.email}` : `${t.webhook}${t.secretFile ? ' (signed)' : ''}`;
}

/** A stable name for a request's own target, for the delivery's workflow id. */
export function targetKey(t: NotifyTarget): string {
  const text = 'email' in t ? t.email : t.webhook;
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return `request-${h.toString(16).padStart(8, '0')}`;
}

/* ----- reading events ----- */

/** How many of the newest events the events workflow keeps for `imgflow events`. */
export const RECENT_KEEP = 1000;

export interface EventsRequest {
  image?: string;
  /** Only events at or after this time (ISO 8601). */
  since?: string;
  types?: string[];
  /** The newest this many (after filtering). */
  limit?: number;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:\d\d)$/;

/** `flag` prefixes the field names, so the CLI's errors name its options. */
export function checkEventsRequest(r: EventsRequest, flag = ''): EventsRequest {
  if (r.image !== undefined) checkName(`${flag}image`, r.image);
  if (r.since !== undefined && (typeof r.since !== 'string' || !ISO.test(r.since) || Number.isNaN(Date.parse(r.since))))
    throw new InputError(`${flag}since`, 'an ISO 8601 time such as 2026-12-03T10:00:00Z', r.since);
  if (r.types !== undefined) checkPatterns(`${flag}type`, r.types);
  if (r.limit !== undefined) checkInt(`${flag}limit`, r.limit, 1, RECENT_KEEP);
  return r;
}
