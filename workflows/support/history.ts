/** The history an entity keeps in its state: numbered entries, each detail clipped. */
import { clip } from '../../common/limits.js';
import type { EventContext } from '../../common/events.js';
import type { HistoryEntry } from '../../common/lineage.js';

/**
 * Appends an entry; details may quote a failure or a tool, so each is clipped and no one entry
 * can swell the state. With `keep`, only the newest `keep` entries stay.
 */
export function appendHistory(
  state: { history: HistoryEntry[]; seq: number },
  entry: Omit<HistoryEntry, 'seq'>,
  keep?: number,
): HistoryEntry {
  const appended = { seq: ++state.seq, at: entry.at, by: entry.by, op: entry.op, detail: clip(entry.detail) };
  state.history.push(appended);
  if (keep !== undefined && state.history.length > keep) state.history.splice(0, state.history.length - keep);
  return appended;
}

/** Told of each entry an entity records: its workflow hands them on as events. */
export type RecordListener = (entry: HistoryEntry, context?: EventContext) => void;
