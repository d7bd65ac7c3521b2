/**
 * Bounds on what people type and on what entity workflows carry. Temporal refuses a payload over
 * 2 MiB (an update's input, a continue-as-new's state): an entity whose state grows past it is
 * terminated by the server and its next request would find nothing. So every free-text field is
 * bounded where it enters, text derived from failures is clipped before it is recorded, and each
 * entity measures its state and sheds before the limit. Pure code, for workflows and starters alike.
 */
import { InputError } from './names.js';

/** The server's limit on one payload. */
export const PAYLOAD_LIMIT = 2 * 1024 * 1024;

/** The most each kind of free text may hold, in characters. */
export const TEXT_LIMITS = {
  /** Why: promote, rollback, revoke, clean, unsubscribe. */
  reason: 500,
  /** A build's or a repaired version's message. */
  message: 1000,
  /** A test result's note. */
  note: 500,
  /** Text that comes from a failure or a tool and goes into a history entry. */
  detail: 2000,
} as const;

export type TextKind = keyof typeof TEXT_LIMITS;

/** Free text of 1..limit characters, not only blanks. */
export function checkText(field: string, value: unknown, kind: TextKind): string {
  const max = TEXT_LIMITS[kind];
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > max)
    throw new InputError(field, `a ${kind} of 1-${max} characters`, value);
  return value;
}

/** Like `checkText`, for a field that may be left out. */
export function checkOptionalText(field: string, value: unknown, kind: TextKind): string | undefined {
  return value === undefined ? undefined : checkText(field, value, kind);
}

/** Text from elsewhere (a failure, a tool's stderr), cut to `max` characters with a note of how much was cut. */
export function clip(text: string, max: number = TEXT_LIMITS.detail): string {
  if (text.length <= max) return text;
  const note = ` [... ${text.length - max} more characters]`;
  return `${text.slice(0, Math.max(0, max - note.length))}${note}`;
}

const ASCII = /^[\x00-\x7f]*$/;

/** The UTF-8 size of a string, without TextEncoder (workflow code runs in a sandbox). */
export function utf8Bytes(text: string): number {
  // Most states are ASCII: one native scan instead of a loop over every character.
  if (ASCII.test(text)) return text.length;
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // Surrogate pairs are 4 bytes for 2 code units; other code units past 0x7ff are 3 bytes for 1.
    if (c > 0x7f) bytes += c > 0x7ff && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return bytes;
}

/** What a value weighs as a JSON payload. */
export const jsonBytes = (value: unknown): number => utf8Bytes(JSON.stringify(value) ?? '');

/**
 * Where an entity stands against the payload limit: past `shedAt` it hands what it can to an
 * archive and continues as new; past `refuseAt` it refuses whatever would grow it, so the state it
 * hands on always fits (every single change is far smaller than the gap to the limit).
 */
export interface StateBudget {
  shedAt: number;
  refuseAt: number;
}

export const DEFAULT_STATE_BUDGET: StateBudget = {
  shedAt: PAYLOAD_LIMIT / 2,
  refuseAt: Math.floor(PAYLOAD_LIMIT * 0.75),
};

/** Refuses a change to an entity whose state is already at the refusal bound. */
export function checkRoom(entity: string, bytes: number, budget: StateBudget, remedy: string): void {
  if (bytes >= budget.refuseAt) {
    throw new InputError(
      'state',
      `${entity} to have room below ${budget.refuseAt} bytes (it holds ${bytes}, near Temporal's ${PAYLOAD_LIMIT}-byte payload limit; ${remedy})`,
      undefined,
    );
  }
}
