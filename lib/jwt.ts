/**
 * JWT verification for the codec server: RS256 only, against a JSON Web Key Set, with exp and nbf
 * checked; and Temporal's `permissions` claim (`<namespace>:<role>`, as its default claim mapper
 * reads it) turned into what a token may do on one namespace.
 */
import { createPublicKey, verify, type JsonWebKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import { InputError } from '../common/names.js';

export interface Jwks {
  keys: (JsonWebKey & { kid?: string; use?: string; alg?: string })[];
}

export interface JwtClaims {
  sub?: string;
  exp?: number;
  nbf?: number;
  permissions?: unknown;
  [claim: string]: unknown;
}

/** Why a token was refused: said to the caller, never with the token itself. */
export class JwtError extends Error {
  override readonly name = 'JwtError';
}

/** A bearer token is a few KiB at most; anything longer is refused before it is parsed. */
const MAX_TOKEN_CHARS = 16 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

function decodePart(part: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    /* refused below */
  }
  throw new JwtError(`token ${what}: expected a base64url JSON object`);
}

export function readJwks(file: string): Jwks {
  let jwks: Jwks;
  try {
    jwks = JSON.parse(fs.readFileSync(file, 'utf8')) as Jwks;
  } catch (err) {
    throw new InputError('--jwks', `a readable JSON Web Key Set (${(err as Error).message.split('\n')[0]})`, file);
  }
  if (!Array.isArray(jwks.keys) || !jwks.keys.some((k) => k.kty === 'RSA'))
    throw new InputError('--jwks', 'a key set {"keys": [...]} with at least one RSA key', file);
  return jwks;
}

function signingKey(jwks: Jwks, kid: unknown): KeyObject {
  const rsa = jwks.keys.filter((k) => k.kty === 'RSA' && (k.use === undefined || k.use === 'sig'));
  // A token without a kid is accepted only when the set leaves no doubt which key signed it.
  const jwk = kid === undefined ? (rsa.length === 1 ? rsa[0] : undefined) : rsa.find((k) => k.kid === kid);
  if (!jwk)
    throw new JwtError(
      kid === undefined
        ? 'token header: expected a kid naming a key of the key set'
        : `token signed with key ${JSON.stringify(String(kid).slice(0, 64))}, which the key set does not hold`,
    );
  return createPublicKey({ key: jwk, format: 'jwk' });
}

/** The token's claims when its RS256 signature verifies against `jwks` and it is valid at `now`; else a JwtError. */
export function verifyJwt(token: string, jwks: Jwks, now: Date = new Date()): JwtClaims {
  if (token.length > MAX_TOKEN_CHARS) throw new JwtError(`token: longer than ${MAX_TOKEN_CHARS} characters`);
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => BASE64URL.test(p)))
    throw new JwtError('token: expected three base64url parts (header.payload.signature)');
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  const header = decodePart(headerPart, 'header');
  // Only RS256: "none" and HMAC algorithms (signed with a public key taken as a secret) never pass.
  if (header.alg !== 'RS256')
    throw new JwtError(`token header alg: expected RS256, got ${JSON.stringify(String(header.alg).slice(0, 16))}`);
  const key = signingKey(jwks, header.kid);
  const signed = Buffer.from(`${headerPart}.${payloadPart}`, 'ascii');
  if (!verify('RSA-SHA256', signed, key, Buffer.from(signaturePart, 'base64url')))
    throw new JwtError('token signature does not verify against the key set');
  const claims = decodePart(payloadPart, 'payload') as JwtClaims;
  const seconds = Math.floor(now.getTime() / 1000);
  if (typeof claims.exp !== 'number') throw new JwtError('token: expected an exp claim');
  if (seconds >= claims.exp) throw new JwtError(`token expired at ${new Date(claims.exp * 1000).toISOString()}`);
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || seconds < claims.nbf))
    throw new JwtError('token not valid yet (nbf)');
  return claims;
}

/** Temporal's roles, weakest first; each grants what the ones before it grant (the worker role aside). */
export type Access = 'read' | 'write' | 'admin';
const RANK: Record<string, number> = { read: 1, write: 2, admin: 3 };
/** Temporal's system namespace: its admin is admin of every namespace. */
const SYSTEM_NAMESPACE = 'temporal-system';

/** Whether the token's `permissions` claim grants `access` (or more) on `namespace`. */
export function grants(claims: JwtClaims, namespace: string, access: Access): boolean {
  if (!Array.isArray(claims.permissions)) return false;
  return claims.permissions.some((permission) => {
    if (typeof permission !== 'string') return false;
    const at = permission.lastIndexOf(':');
    const ns = permission.slice(0, at);
    const rank = RANK[permission.slice(at + 1).toLowerCase()] ?? 0;
    if (ns === SYSTEM_NAMESPACE) return rank >= RANK.admin!;
    return ns === namespace && rank >= RANK[access]!;
  });
}
