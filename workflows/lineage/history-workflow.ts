import type { ArchiveReadInput } from '../../activities/control/lineage-history.js';
import type { HistoryEntry } from '../../common/lineage.js';
import { readOnControl } from './read-on-control.js';

/**
 * What `imgflow history` runs to read a page of a lineage's archived history: the archive is a file
 * on the control host and the CLI may run anywhere, so the read goes through Temporal to the control
 * queue like every other host's work. A query cannot run an activity, and an update to the lineage
 * would add a read to its history: hence a short workflow of its own, which records nothing.
 */
export async function lineageHistoryWorkflow(input: ArchiveReadInput): Promise<HistoryEntry[]> {
  return readOnControl(`the archived history of ${input.image}`, (reader) => reader.readArchivedHistory(input));
}
