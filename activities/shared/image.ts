/**
 * What more than one role reads about an image: the packages and file manifest the builder writes
 * and the NAS compares between versions, and the password hashes the builder's validation and the
 * NAS's packing both refuse.
 */

/** One installed package, as dpkg's status database names it. */
export interface InstalledPackage {
  name: string;
  version: string;
  arch: string;
}

/** One line of a version's file manifest (`manifest.jsonl`). */
export interface ManifestEntry {
  path: string;
  type: 'file' | 'dir' | 'link' | 'other';
  mode: string;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  target?: string;
}

/** A shadow password field that holds a hash (not locked-empty `*`, `!`, `!*` or empty). */
export function isPasswordHash(field: string): boolean {
  const bare = field.replace(/^!+/, '');
  return bare !== '' && bare !== '*';
}

/** Users whose entry in the text of /etc/shadow holds a password hash. */
export function usersWithPasswords(shadow: string): string[] {
  return shadow
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length > 1 && isPasswordHash(f[1]!))
    .map((f) => f[0]!);
}
