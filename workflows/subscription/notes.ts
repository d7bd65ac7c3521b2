/** How failures and remarks read in a sync's outcomes and a subscription's history. */
import { failureMessage, firstLine } from '../support/failures.js';

/**
 * A failure as the one line an outcome note or a history entry holds: the first line of what the
 * activity or child threw (a subscription's notes are shown one to a row).
 */
export function message(error: unknown): string {
  return firstLine(failureMessage(error));
}

/** Notes joined for an outcome; none when there are none. */
export function notes(...parts: (string | undefined)[]): { note?: string } {
  const note = parts.filter(Boolean).join('; ');
  return note ? { note } : {};
}
