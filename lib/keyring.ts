/**
 * The payload keyring: AES-256 keys in one JSON file readable by its owner only (0600, in a 0700
 * directory). The newest key encrypts; every listed key decrypts, so a rotation never strands old
 * histories. Key material stays inside this module and the codec: what leaves it (lists, errors)
 * carries key ids and creation times only.
 */
import { createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const KEY_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface KeyInfo {
  id: string;
  /** ISO 8601, UTC. */
  created: string;
}

export interface Keyring {
  file: string;
  /** Oldest first; the last one encrypts. */
  keys: KeyInfo[];
  current: KeyInfo;
  /** The key of an id, or undefined for an id not in this keyring. */
  key(id: string): KeyObject | undefined;
}

interface StoredKey extends KeyInfo {
  /** base64 of 32 random bytes. */
  key: string;
}

/** A one-line error about the keyring file: names the file and the field, never key material. */
export class KeyringError extends Error {
  override readonly name = 'KeyringError';
}

/** A new key id: its creation time, readable, plus a random suffix so two made in one second differ. */
function newKeyId(now: Date): string {
  return `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
}

function newKey(now = new Date()): StoredKey {
  return { id: newKeyId(now), created: now.toISOString(), key: randomBytes(KEY_BYTES).toString('base64') };
}

function parseKeys(file: string, text: string): StoredKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new KeyringError(`keyring ${file}: expected JSON with a "keys" list`);
  }
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0)
    throw new KeyringError(`keyring ${file}: keys: expected a non-empty list`);
  const seen = new Set<string>();
  return keys.map((k: Partial<StoredKey>, i) => {
    if (typeof k.id !== 'string' || !KEY_ID.test(k.id))
      throw new KeyringError(`keyring ${file}: keys[${i}].id: expected 1-64 letters, digits, ".", "_" or "-"`);
    if (seen.has(k.id)) throw new KeyringError(`keyring ${file}: keys[${i}].id: ${k.id} is listed twice`);
    seen.add(k.id);
    if (typeof k.created !== 'string' || Number.isNaN(Date.parse(k.created)))
      throw new KeyringError(`keyring ${file}: keys[${i}].created: expected an ISO 8601 time`);
    if (typeof k.key !== 'string' || Buffer.from(k.key, 'base64').length !== KEY_BYTES) {
      throw new KeyringError(`keyring ${file}: keys[${i}].key (id ${k.id}): expected ${KEY_BYTES} bytes in base64`);
    }
    return { id: k.id, created: k.created, key: k.key };
  });
}

function toKeyring(file: string, stored: StoredKey[]): Keyring {
  const secrets = new Map(stored.map((k) => [k.id, createSecretKey(Buffer.from(k.key, 'base64'))]));
  const keys = stored.map(({ id, created }) => ({ id, created }));
  return { file, keys, current: keys.at(-1)!, key: (id) => secrets.get(id) };
}

function readStored(file: string): StoredKey[] {
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077)
    throw new KeyringError(
      `keyring ${file}: mode ${mode.toString(8)} lets others read it; expected 600 (chmod 600 ${file})`,
    );
  return parseKeys(file, fs.readFileSync(file, 'utf8'));
}

/** Writes beside the target with 0600 and renames over it (or links it, when it must not exist yet). */
function writeStored(file: string, keys: StoredKey[], mustBeNew: boolean): void {
  // Only the keyring's own directory is made private; its parents are made as usual.
  fs.mkdirSync(path.dirname(path.dirname(file)), { recursive: true });
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, `${JSON.stringify({ keys }, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    // link() fails with EEXIST where rename() would replace: two processes making the first keyring keep one.
    if (mustBeNew) fs.linkSync(tmp, file);
    else fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

export function readKeyring(file: string): Keyring {
  if (!fs.existsSync(file)) throw new KeyringError(`keyring ${file} does not exist: make one with 'imgflow keys new'`);
  return toKeyring(file, readStored(file));
}

/** Makes a keyring with one key; refuses to replace one that exists (its keys may still be needed). */
export function createKeyring(file: string): Keyring {
  if (fs.existsSync(file))
    throw new KeyringError(`keyring ${file} exists already: 'imgflow keys rotate' adds a key to it`);
  const keys = [newKey()];
  try {
    writeStored(file, keys, true);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new KeyringError(`keyring ${file} exists already: 'imgflow keys rotate' adds a key to it`);
    throw err;
  }
  return toKeyring(file, keys);
}

/** The keyring at `file`, made with one fresh key on first use (so a fresh machine needs no step). */
export function openKeyring(file: string): { keyring: Keyring; created: boolean } {
  if (fs.existsSync(file)) return { keyring: readKeyring(file), created: false };
  try {
    return { keyring: createKeyring(file), created: true };
  } catch (err) {
    // Another process made it meanwhile: use theirs.
    if (err instanceof KeyringError && fs.existsSync(file)) return { keyring: readKeyring(file), created: false };
    throw err;
  }
}

/** Adds a new newest key; every older key stays to decrypt what it encrypted. */
export function rotateKeyring(file: string): Keyring {
  if (!fs.existsSync(file)) throw new KeyringError(`keyring ${file} does not exist: make one with 'imgflow keys new'`);
  const keys = [...readStored(file), newKey()];
  writeStored(file, keys, false);
  return toKeyring(file, keys);
}
