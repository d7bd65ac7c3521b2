/** Real tools the tests need. A missing one fails the test loudly: nothing skips into a pass. */
import { findOnPath } from '../../lib/which.js';
import {
  findServerBinaries,
  serverCacheDir,
  TEMPORAL_SERVER_VERSION,
  type ServerBinaries,
} from '../../starters/cluster/build.js';

const SBIN = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

export function requireTools(...names: string[]): void {
  const missing = names.filter((name) => !findOnPath(name, SBIN));
  if (missing.length) throw new Error(`required tools missing: ${missing.join(', ')} (run scripts/setup.sh)`);
}

/** The production Temporal server and its SQL tool, built by scripts/setup.sh into the per-user cache. */
export function requireClusterBinaries(): ServerBinaries {
  const bins = findServerBinaries();
  if (!bins)
    throw new Error(
      `the Temporal server ${TEMPORAL_SERVER_VERSION} is not built in ${serverCacheDir()} (run scripts/setup.sh)`,
    );
  requireTools('openssl');
  return bins;
}
