/** Real tools the tests need. A missing one fails the test loudly: nothing skips into a pass. */
import { findOnPath } from '../../lib/which.js';

const SBIN = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

export function requireTools(...names: string[]): void {
  const missing = names.filter((name) => !findOnPath(name, SBIN));
  if (missing.length) throw new Error(`required tools missing: ${missing.join(', ')} (run scripts/setup.sh)`);
}
