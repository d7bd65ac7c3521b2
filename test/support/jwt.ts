/**
 * A key set of the tests' own and tokens signed with it, in the claim shape Temporal's default
 * claim mapper reads (`permissions: ["<namespace>:<role>"]`).
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { Jwks } from '../../lib/jwt.js';

export interface TestKeySet {
  jwks: Jwks;
  kid: string;
  privateKey: KeyObject;
}

export function makeKeySet(kid = 'test-key-1'): TestKeySet {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' }] },
    kid,
    privateKey,
  };
}

const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A signed token: valid for an hour from now unless the claims say otherwise. */
export function mintToken(
  keys: Pick<TestKeySet, 'kid' | 'privateKey'>,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
): string {
  const now = Math.floor(Date.now() / 1000);
  const signed = `${part({ alg: 'RS256', typ: 'JWT', kid: keys.kid, ...header })}.${part({ sub: 'tester', iat: now, exp: now + 3600, ...claims })}`;
  return `${signed}.${sign('RSA-SHA256', Buffer.from(signed), keys.privateKey).toString('base64url')}`;
}
