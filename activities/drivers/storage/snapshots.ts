/** Snapshot bookkeeping shared by the stores: which snapshots are imgflow's and which to prune. */
import { checkInt } from '../../../common/names.js';
import { SNAPSHOT_PREFIX } from '../types.js';

export const DEFAULT_KEEP = 3;

/** A base's snapshot marks it complete; it is never pruned, though it shares the prefix. */
export const BASE_SNAPSHOT = `${SNAPSHOT_PREFIX}base`;

/** imgflow's own rolling snapshots, oldest first (their names sort by time). */
export function ownSnapshots(names: readonly string[]): string[] {
  return names.filter((n) => n.startsWith(SNAPSHOT_PREFIX) && n !== BASE_SNAPSHOT).sort();
}

/** The snapshots to destroy so that the newest `keep` of imgflow's remain; others are never chosen. */
export function snapshotsToPrune(names: readonly string[], keep = DEFAULT_KEEP): string[] {
  checkInt('keep', keep, 1, 1000);
  const own = ownSnapshots(names);
  return own.slice(0, Math.max(0, own.length - keep));
}
