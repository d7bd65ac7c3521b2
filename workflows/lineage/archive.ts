/** What a lineage hands to its archives on the control host before it continues as new. */
import { log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { LineageHistoryActivities } from '../../activities/control/lineage-history.js';
import { CONTROL_QUEUE } from '../../common/queues.js';
import { failureMessage } from '../support/failures.js';
import type { Lineage } from './lineage.js';

/** Entries per archive request: each request's payload stays far below Temporal's 2 MB limit. */
const ARCHIVE_BATCH = 500;
/** Version records per archive request (each up to a few KB). */
const VERSION_BATCH = 200;

const control = proxyActivities<LineageHistoryActivities>({
  taskQueue: CONTROL_QUEUE,
  scheduleToStartTimeout: '5m',
  startToCloseTimeout: '2m',
  retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError'] },
});

/**
 * Hands all but the newest `keep` history entries to the archive on the control host, a batch at
 * a time, and drops each batch from the state once it is on disk. Handlers keep running meanwhile:
 * what they record lands after the batch, so it stays. A failure loses nothing: the entries stay in
 * the state and the next continue-as-new tries again.
 */
export async function archiveOlderHistory(lineage: Lineage, keep: number): Promise<void> {
  const s = lineage.state;
  const chain = s.archive?.chain ?? workflowInfo().firstExecutionRunId;
  const older = s.history.slice(0, s.history.length - keep);
  for (let i = 0; i < older.length; i += ARCHIVE_BATCH) {
    const batch = older.slice(i, i + ARCHIVE_BATCH);
    try {
      const done = await control.archiveHistory({
        image: s.image,
        chain,
        after: s.archive?.throughSeq ?? 0,
        entries: batch,
      });
      lineage.archived(batch, done, chain);
    } catch (err) {
      log.warn('history not archived: it stays in the state until the next continue-as-new', {
        image: s.image,
        error: failureMessage(err),
      });
      return;
    }
  }
}

/**
 * Hands the full records of removed versions to the version archive on the control host, a batch
 * at a time, and keeps a stub of each in the state once the archive confirms it holds the record.
 * A failure drops nothing: the records stay in the state and the next continue-as-new tries again.
 */
export async function archiveRemovedVersions(lineage: Lineage): Promise<void> {
  const s = lineage.state;
  const chain = s.versionArchive?.chain ?? s.archive?.chain ?? workflowInfo().firstExecutionRunId;
  const pending = lineage.unarchived();
  for (let i = 0; i < pending.length; i += VERSION_BATCH) {
    try {
      const done = await control.archiveVersions({
        image: s.image,
        chain,
        after: s.versionArchive?.count ?? 0,
        records: pending.slice(i, i + VERSION_BATCH),
      });
      lineage.versionsArchived(done, chain);
    } catch (err) {
      log.warn('removed versions not archived: their records stay in the state until the next continue-as-new', {
        image: s.image,
        error: failureMessage(err),
      });
      return;
    }
  }
}
