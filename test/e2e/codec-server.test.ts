/**
 * `imgflow codec-server` as the Web UI calls it: CORS preflight for the UI's origin, payloads
 * decoded for a valid token that grants read on the namespace, and refused (401/403, nothing
 * decoded) without a token, with a bad signature, an expired or not-yet-valid token, an unsigned
 * one, or a token for another namespace; encoding needs write.
 */
import fs from 'node:fs';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AesGcmCodec } from '../../lib/codec.js';
import { createKeyring } from '../../lib/keyring.js';
import { spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { makeKeySet, mintToken } from '../support/jwt.js';
import { freePort } from '../support/ports.js';
import { killGroup } from '../support/processes.js';
import { until } from '../support/wait.js';

const UI = 'http://127.0.0.1:8233';
const MARKER = 'image list hepix-7c21 endorsed by CN=site-admin';
const b64 = (bytes: Uint8Array | null | undefined) => Buffer.from(bytes ?? []).toString('base64');
const asJson = (p: Payload) => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, b64(v)])),
  data: b64(p.data),
});
const fromJson = (p: { metadata: Record<string, string>; data: string }): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data, 'base64'),
});

describe('imgflow codec-server', () => {
  const dir = tempDir();
  const keysFile = path.join(dir, 'keys', 'codec.json');
  const codec = new AesGcmCodec(createKeyring(keysFile));
  const keys = makeKeySet();
  const impostor = { ...makeKeySet(), kid: keys.kid };
  const jwksFile = path.join(dir, 'jwks.json');
  fs.writeFileSync(jwksFile, JSON.stringify(keys.jwks));
  let url = '';
  let pid: number | undefined;
  let sealed: Payload;

  beforeAll(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const child = spawnImgflow(
      [
        '--codec-keys',
        keysFile,
        'codec-server',
        '--listen',
        `127.0.0.1:${port}`,
        '--cors-origin',
        UI,
        '--jwks',
        jwksFile,
      ],
      { IMGFLOW_LOG_PRETTY: '0' },
    );
    pid = child.pid;
    child.stdout!.resume();
    child.stderr!.resume();
    await until(
      'the codec server',
      async () => (await fetch(`${url}/decode`, { method: 'POST' })).status === 401,
      30_000,
    );
    sealed = (await codec.encode([defaultPayloadConverter.toPayload({ list: MARKER })]))[0]!;
  });
  afterAll(() => killGroup(pid));

  async function call(route: string, token: string | undefined, namespace = 'imgflow', payloads: Payload[] = [sealed]) {
    const res = await fetch(`${url}${route}`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'X-Namespace': namespace,
        Origin: UI,
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ payloads: payloads.map(asJson) }),
    });
    const text = await res.text();
    return { status: res.status, text, headers: res.headers };
  }

  it("answers the Web UI's preflight for its origin only", async () => {
    const ok = await fetch(`${url}/decode`, {
      method: 'OPTIONS',
      headers: {
        Origin: UI,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'authorization,content-type,x-namespace',
      },
    });
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe(UI);
    expect(ok.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
    expect(ok.headers.get('access-control-allow-headers')).toMatch(/X-Namespace/);
    const other = await fetch(`${url}/decode`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' },
    });
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('decodes for a token that grants read (or more) on the namespace', async () => {
    for (const permission of ['imgflow:read', 'imgflow:write', 'imgflow:admin', 'temporal-system:admin']) {
      const res = await call('/decode', mintToken(keys, { permissions: [permission] }));
      expect(res.status).toBe(200);
      expect(res.headers.get('access-control-allow-origin')).toBe(UI);
      const [payload] = (JSON.parse(res.text) as { payloads: { metadata: Record<string, string>; data: string }[] })
        .payloads;
      expect(defaultPayloadConverter.fromPayload(fromJson(payload!))).toEqual({ list: MARKER });
    }
  });

  it('passes plain payloads through, as histories recorded before encryption hold them', async () => {
    const plain = defaultPayloadConverter.toPayload('plain');
    const res = await call('/decode', mintToken(keys, { permissions: ['imgflow:read'] }), 'imgflow', [plain]);
    expect(res.status).toBe(200);
    expect((JSON.parse(res.text) as { payloads: unknown[] }).payloads).toEqual([asJson(plain)]);
  });

  it('refuses, decoding nothing: no token, a bad signature, expired, not yet valid, unsigned, or another namespace', async () => {
    const now = Math.floor(Date.now() / 1000);
    const read = { permissions: ['imgflow:read'] };
    const unsigned = `${mintToken(keys, read, { alg: 'none' }).split('.').slice(0, 2).join('.')}.`;
    const refusals: [string, string | undefined, string, number, RegExp][] = [
      ['no token', undefined, 'imgflow', 401, /Bearer/],
      ['bad signature', mintToken(impostor, read), 'imgflow', 401, /signature does not verify/],
      ['expired', mintToken(keys, { ...read, exp: now - 60 }), 'imgflow', 401, /expired/],
      ['not yet valid', mintToken(keys, { ...read, nbf: now + 600 }), 'imgflow', 401, /not valid yet/],
      ['unsigned', unsigned, 'imgflow', 401, /three base64url parts|alg/],
      [
        'another namespace',
        mintToken(keys, { permissions: ['other:admin'] }),
        'imgflow',
        403,
        /does not grant read on namespace imgflow/,
      ],
      ['worker role only', mintToken(keys, { permissions: ['imgflow:worker'] }), 'imgflow', 403, /does not grant read/],
      ['asks for another namespace', mintToken(keys, read), 'other', 403, /does not grant read on namespace other/],
    ];
    for (const [what, token, namespace, status, reason] of refusals) {
      const res = await call('/decode', token, namespace);
      expect({ what, status: res.status }).toEqual({ what, status });
      expect(res.text).toMatch(reason);
      expect(res.text).not.toContain('hepix-7c21');
      expect(res.text).not.toContain('payloads');
    }
  });

  it('encodes only for a token that grants write', async () => {
    const plain = defaultPayloadConverter.toPayload({ list: MARKER });
    expect((await call('/encode', mintToken(keys, { permissions: ['imgflow:read'] }), 'imgflow', [plain])).status).toBe(
      403,
    );
    const res = await call('/encode', mintToken(keys, { permissions: ['imgflow:write'] }), 'imgflow', [plain]);
    expect(res.status).toBe(200);
    const [payload] = (JSON.parse(res.text) as { payloads: { metadata: Record<string, string>; data: string }[] })
      .payloads;
    expect(Buffer.from(payload!.data, 'base64').includes(Buffer.from('hepix-7c21'))).toBe(false);
    expect(defaultPayloadConverter.fromPayload((await codec.decode([fromJson(payload!)]))[0]!)).toEqual({
      list: MARKER,
    });
  });
});
