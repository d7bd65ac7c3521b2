/** Tokens the cluster mints, and the client settings every connection is built from. */
import { createPublicKey, verify } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { connectionSettings } from '../../lib/connection.js';
import { ensureSigningKey, mintToken, parseTtl, permissionsOf, writeTokenFile } from '../../starters/cluster/tokens.js';
import { tempDir } from '../support/dirs.js';

describe('cluster tokens', () => {
  const dir = tempDir();

  it('are RS256 tokens the published key set verifies, with the role as permissions and an expiry', () => {
    const key = ensureSigningKey(path.join(dir, 'keys'));
    const token = mintToken(
      key,
      { role: 'viewer', namespace: 'imgflow', subject: 'alice', ttlSeconds: 60 },
      1_000_000_000_000,
    );
    const [header, claims, signature] = token.split('.') as [string, string, string];
    const jwks = JSON.parse(fs.readFileSync(key.jwksFile, 'utf8')) as {
      keys: (Record<string, string> & { kid: string })[];
    };
    const jwk = jwks.keys.find((k) => k.kid === key.kid)!;
    expect(jwk).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });
    expect(jwk).not.toHaveProperty('d');
    const publicKey = createPublicKey({ key: jwk, format: 'jwk' });
    expect(
      verify('RSA-SHA256', Buffer.from(`${header}.${claims}`), publicKey, Buffer.from(signature, 'base64url')),
    ).toBe(true);
    expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toMatchObject({ alg: 'RS256', kid: key.kid });
    expect(JSON.parse(Buffer.from(claims, 'base64url').toString())).toMatchObject({
      sub: 'alice',
      permissions: ['imgflow:read'],
      iat: 1_000_000_000,
      exp: 1_000_000_060,
    });
    expect(fs.statSync(key.keyFile).mode & 0o777).toBe(0o600);
  });

  it('give operators and workers write access, viewers read, the administrator the system namespace', () => {
    expect(permissionsOf('operator', 'ns')).toEqual(['ns:write']);
    expect(permissionsOf('viewer', 'ns')).toEqual(['ns:read']);
    expect(permissionsOf('worker', 'ns')).toContain('ns:write');
    expect(permissionsOf('admin', 'ns')).toEqual(['temporal-system:admin']);
  });

  it('refuse a bad lifetime or subject, naming the field', () => {
    expect(parseTtl('12h')).toBe(43_200);
    expect(() => parseTtl('forever')).toThrow(/^--ttl: expected/);
    expect(() => parseTtl('999d')).toThrow(/^--ttl: expected/);
    const key = ensureSigningKey(path.join(dir, 'keys'));
    expect(() => mintToken(key, { role: 'viewer', namespace: 'imgflow', subject: 'a b', ttlSeconds: 60 })).toThrow(
      /^--sub: expected/,
    );
  });
});

describe('connection settings', () => {
  const dir = tempDir();
  const pem = (name: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `-----BEGIN ${name}-----\n`);
    return file;
  };

  it('are plain gRPC by default, as the dev server wants', () => {
    expect(connectionSettings(loadConfig({ home: dir }, {}))).toEqual({ address: '127.0.0.1:7233', tls: false });
  });

  it("read the Temporal CLI's TLS variables and a token file", () => {
    const token = path.join(dir, 'token');
    writeTokenFile(token, 'aaa.bbb.ccc');
    const env = {
      TEMPORAL_ADDRESS: 'temporal.example.org:7233',
      TEMPORAL_TLS_CLIENT_CERT_PATH: pem('cert'),
      TEMPORAL_TLS_CLIENT_KEY_PATH: pem('key'),
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: pem('ca'),
      TEMPORAL_TLS_SERVER_NAME: 'frontend.example.org',
      IMGFLOW_API_KEY_FILE: token,
    };
    const settings = connectionSettings(loadConfig({ home: dir }, env));
    expect(settings.apiKey).toBe('aaa.bbb.ccc');
    expect(settings.tls).toMatchObject({
      serverNameOverride: 'frontend.example.org',
      clientCertPair: { crt: expect.any(Buffer), key: expect.any(Buffer) },
    });
    expect(String((settings.tls as { serverRootCACertificate: Buffer }).serverRootCACertificate)).toContain('BEGIN ca');
  });

  it('refuse a certificate without its key, or an unreadable token file, without echoing a token', () => {
    expect(() => connectionSettings(loadConfig({ home: dir }, { TEMPORAL_TLS_CLIENT_CERT_PATH: pem('cert') }))).toThrow(
      /^--tls-key-path: expected/,
    );
    expect(() =>
      connectionSettings(loadConfig({ home: dir }, { IMGFLOW_API_KEY_FILE: path.join(dir, 'none') })),
    ).toThrow(/^--api-key-file: expected/);
    const bad = path.join(dir, 'bad-token');
    fs.writeFileSync(bad, 'secret with spaces');
    expect(() => connectionSettings(loadConfig({ home: dir }, { IMGFLOW_API_KEY_FILE: bad }))).toThrow(
      /^--api-key-file: expected a file holding one token$/,
    );
  });
});
