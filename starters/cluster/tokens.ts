/**
 * Who may do what: an RSA key the cluster signs tokens with, its public half as a JSON Web Key
 * Set that the frontend's default JWT claim mapper fetches, and the tokens themselves (RS256, a
 * `permissions` claim of `<namespace>:<access>` that Temporal's default authorizer checks).
 *
 * Temporal's default authorizer has no level between reading and writing for workers: polling
 * and completing tasks need write access. A worker's token therefore carries `write` (and names
 * the worker in `sub`); what sets it apart from an operator is whom it is given to.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { checkInt, InputError } from '../../common/names.js';

export const TOKEN_ROLES = ['operator', 'viewer', 'worker', 'admin'] as const;
export type TokenRole = (typeof TOKEN_ROLES)[number];

/** The system namespace: an `admin` permission there administers the cluster. */
const SYSTEM_NAMESPACE = 'temporal-system';

export interface SigningKey {
  /** PEM private key, 0600. */
  keyFile: string;
  /** The JSON Web Key Set the frontend fetches. */
  jwksFile: string;
  kid: string;
}

/** The signing key under `dir`, made once, with its key set beside it. */
export function ensureSigningKey(dir: string): SigningKey {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyFile = path.join(dir, 'token-signing.key');
  const jwksFile = path.join(dir, 'jwks.json');
  if (!fs.existsSync(keyFile)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  }
  const publicJwk = createPublicKey(createPrivateKey(fs.readFileSync(keyFile))).export({ format: 'jwk' });
  // The key id is stable for a key: the thumbprint-like prefix of its modulus.
  const kid = `imgflow-${String(publicJwk.n).slice(0, 16)}`;
  fs.writeFileSync(jwksFile, `${JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'RS256', use: 'sig' }] })}\n`);
  return { keyFile, jwksFile, kid };
}

export function checkRole(value: string): TokenRole {
  if (!(TOKEN_ROLES as readonly string[]).includes(value))
    throw new InputError('--role', TOKEN_ROLES.join(', '), value);
  return value as TokenRole;
}

/** The permissions claim of a role on a namespace. */
export function permissionsOf(role: TokenRole, namespace: string): string[] {
  switch (role) {
    case 'viewer':
      return [`${namespace}:read`];
    case 'operator':
      return [`${namespace}:write`];
    case 'worker':
      return [`${namespace}:write`, `${namespace}:worker`];
    case 'admin':
      return [`${SYSTEM_NAMESPACE}:admin`];
  }
}

const SUBJECT = /^[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}$/;
const MAX_TTL_SECONDS = 400 * 86_400;

export interface TokenRequest {
  role: TokenRole;
  namespace: string;
  subject: string;
  ttlSeconds: number;
}

/** `30s`, `15m`, `12h`, `90d` (or plain seconds) as seconds, at most 400 days. */
export function parseTtl(value: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(value);
  if (!m) throw new InputError('--ttl', 'a duration such as 3600, 15m, 12h or 30d', value);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return checkInt('--ttl', Number(m[1]) * unit, 1, MAX_TTL_SECONDS);
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** A signed token (RS256). */
export function mintToken(key: SigningKey, req: TokenRequest, now = Date.now()): string {
  if (!SUBJECT.test(req.subject))
    throw new InputError('--sub', 'a name of 1-128 letters, digits, "@", ".", "_", ":" or "-"', req.subject);
  const issuedAt = Math.floor(now / 1000);
  const header = { alg: 'RS256', typ: 'JWT', kid: key.kid };
  const claims = {
    sub: req.subject,
    permissions: permissionsOf(req.role, req.namespace),
    iat: issuedAt,
    exp: issuedAt + req.ttlSeconds,
    jti: randomUUID(),
  };
  const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = sign('RSA-SHA256', Buffer.from(unsigned), createPrivateKey(fs.readFileSync(key.keyFile)));
  return `${unsigned}.${b64url(signature)}`;
}

/** Writes a token to a private file (0600), so it never has to sit on a command line. */
export function writeTokenFile(file: string, token: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}
