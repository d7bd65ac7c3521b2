/** The history an entity keeps in its state: numbered entries, each detail clipped. */
import { clip } from '../../common/limits.js';
import type { HistoryEntry } from '../../common/lineage.js';

/**
 * Appends an entry; details may quote a failure or a tool, so each is clipped and no one entry
 * can swell the state. With `keep`, only the newest `keep` entries stay.
 */
export function appendHistory(
  state: { history: HistoryEntry[]; seq: number },
  entry: Omit<HistoryEntry, 'seq'>,
  keep?: number,
): void {
  state.history.push({ seq: ++state.seq, at: entry.at, by: entry.by, op: entry.op, detail: clip(entry.detail) });
  if (keep !== undefined && state.history.length > keep) state.history.splice(0, state.history.length - keep);
}
