/** The payload codec and its keyring: sealing, rotation, refusals, and the keyring file's modes. */
import fs from 'node:fs';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { AesGcmCodec, ENCRYPTED_ENCODING, KEY_ID_METADATA } from '../../lib/codec.js';
import { createKeyring, openKeyring, readKeyring, rotateKeyring } from '../../lib/keyring.js';
import { tempDir } from '../support/dirs.js';

const MARKER = 'recipe: compute-el9 with hook motd-7f3c';
const text = (b: Uint8Array | null | undefined) => Buffer.from(b ?? []).toString('utf8');
const payloadOf = (value: unknown): Payload => defaultPayloadConverter.toPayload(value);
/** A payload's metadata and data as base64, to compare payloads whatever class holds their bytes. */
const bytesOf = (p: Payload) => ({
  metadata: Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
  ),
  data: Buffer.from(p.data ?? []).toString('base64'),
});

async function roundTrip(codec: AesGcmCodec, payload: Payload): Promise<Payload> {
  return (await codec.decode(await codec.encode([payload])))[0]!;
}

describe('payload codec', () => {
  const dir = tempDir();
  const keysFile = (name: string) => path.join(dir, name, 'codec.json');

  it('seals the whole payload, metadata and data, and opens it again as it was', async () => {
    const codec = new AesGcmCodec(createKeyring(keysFile('round-trip')));
    const original = payloadOf({ recipe: MARKER });
    const [sealed] = await codec.encode([original]);
    expect(text(sealed!.metadata!.encoding)).toBe(ENCRYPTED_ENCODING);
    expect(Object.keys(sealed!.metadata!).sort()).toEqual([KEY_ID_METADATA, 'encoding'].sort());
    expect(Buffer.from(sealed!.data!).includes(Buffer.from('compute-el9'))).toBe(false);
    expect(Buffer.from(sealed!.data!).includes(Buffer.from('json/plain'))).toBe(false);
    const opened = (await codec.decode([sealed!]))[0]!;
    expect(text(opened.metadata!.encoding)).toBe('json/plain');
    expect(defaultPayloadConverter.fromPayload(opened)).toEqual({ recipe: MARKER });
  });

  it('uses a fresh nonce for each payload: the same value never seals to the same bytes', async () => {
    const codec = new AesGcmCodec(readKeyring(keysFile('round-trip')));
    const [a, b] = await codec.encode([payloadOf(MARKER), payloadOf(MARKER)]);
    expect(Buffer.from(a!.data!).equals(Buffer.from(b!.data!))).toBe(false);
  });

  it('seals with the newest key after a rotation, and still opens what the older key sealed', async () => {
    const file = keysFile('rotation');
    const before = new AesGcmCodec(createKeyring(file));
    const [old] = await before.encode([payloadOf(MARKER)]);
    const rotated = rotateKeyring(file);
    expect(rotated.keys).toHaveLength(2);
    const after = new AesGcmCodec(rotated);
    const [fresh] = await after.encode([payloadOf(MARKER)]);
    expect(text(fresh!.metadata![KEY_ID_METADATA])).toBe(rotated.keys[1]!.id);
    expect(text(old!.metadata![KEY_ID_METADATA])).toBe(rotated.keys[0]!.id);
    for (const sealed of [old!, fresh!])
      expect(defaultPayloadConverter.fromPayload((await after.decode([sealed]))[0]!)).toBe(MARKER);
  });

  it('takes up a key added to its keyring file by a rotation elsewhere, then seals with it', async () => {
    const file = keysFile('reload');
    const running = new AesGcmCodec(createKeyring(file), () => readKeyring(file));
    const rotated = new AesGcmCodec(rotateKeyring(file));
    const [fresh] = await rotated.encode([payloadOf(MARKER)]);
    expect(defaultPayloadConverter.fromPayload((await running.decode([fresh!]))[0]!)).toBe(MARKER);
    const [next] = await running.encode([payloadOf(MARKER)]);
    expect(text(next!.metadata![KEY_ID_METADATA])).toBe(text(fresh!.metadata![KEY_ID_METADATA]));
  });

  it('refuses a payload sealed with a key it does not hold, naming the key id and never a key', async () => {
    const other = new AesGcmCodec(createKeyring(keysFile('other')));
    const [sealed] = await other.encode([payloadOf(MARKER)]);
    const id = text(sealed!.metadata![KEY_ID_METADATA]);
    const codec = new AesGcmCodec(readKeyring(keysFile('round-trip')), () => readKeyring(keysFile('round-trip')));
    const error = (await codec.decode([sealed!]).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain(`key id "${id}"`);
    const stored = (JSON.parse(fs.readFileSync(keysFile('round-trip'), 'utf8')) as { keys: { key: string }[] }).keys[0]!
      .key;
    expect(error.message).not.toContain(stored);
  });

  it('refuses an altered payload: a flipped byte, a swapped key id or a truncated one', async () => {
    const file = keysFile('rotation');
    const codec = new AesGcmCodec(readKeyring(file));
    const [sealed] = await codec.encode([payloadOf(MARKER)]);
    const flipped = Buffer.from(sealed!.data!);
    flipped[20]! ^= 0x01;
    await expect(codec.decode([{ ...sealed!, data: flipped }])).rejects.toThrow(/failed authentication/);
    const otherId = readKeyring(file).keys[0]!.id;
    const swapped = { ...sealed!, metadata: { ...sealed!.metadata!, [KEY_ID_METADATA]: Buffer.from(otherId) } };
    await expect(codec.decode([swapped])).rejects.toThrow(/failed authentication/);
    await expect(codec.decode([{ ...sealed!, data: Buffer.from(sealed!.data!).subarray(0, 10) }])).rejects.toThrow(
      /truncated/,
    );
  });

  it('passes a payload that is not encrypted through unchanged (histories recorded in plain text)', async () => {
    const codec = new AesGcmCodec(readKeyring(keysFile('round-trip')));
    const plain = payloadOf({ image: 'demo-node' });
    expect((await codec.decode([plain]))[0]).toBe(plain);
    expect(bytesOf(await roundTrip(codec, plain))).toEqual(bytesOf(plain));
  });
});

describe('payload keyring', () => {
  const dir = tempDir();

  it('is made on first use, owner-only, and found again by the next process', () => {
    const file = path.join(dir, 'state', 'keys', 'codec.json');
    const first = openKeyring(file);
    expect(first.created).toBe(true);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const again = openKeyring(file);
    expect(again.created).toBe(false);
    expect(again.keyring.keys).toEqual(first.keyring.keys);
  });

  it('refuses a keyring that others can read, and never replaces one that exists', () => {
    const file = path.join(dir, 'loose', 'codec.json');
    createKeyring(file);
    expect(() => createKeyring(file)).toThrow(/exists already/);
    fs.chmodSync(file, 0o644);
    expect(() => readKeyring(file)).toThrow(/mode 644 lets others read it; expected 600/);
  });

  it('names the field of a broken keyring without showing key material', () => {
    const file = path.join(dir, 'broken.json');
    fs.writeFileSync(file, JSON.stringify({ keys: [{ id: 'k1', created: '2026-01-01T00:00:00Z', key: 'c2hvcnQ=' }] }), {
      mode: 0o600,
    });
    let message = '';
    try {
      readKeyring(file);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/keys\[0\]\.key \(id k1\): expected 32 bytes in base64/);
    expect(message).not.toContain('c2hvcnQ=');
  });
});
