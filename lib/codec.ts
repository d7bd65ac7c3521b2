/**
 * Encrypted payloads: every payload a client or worker sends is sealed with AES-256-GCM before it
 * reaches Temporal, so the server's database holds no plain text of image lists, recipes,
 * manifests or registry metadata. The whole original payload (metadata and data) is sealed; the
 * outside carries only our encoding and the key id. Codecs run outside the workflow sandbox.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import proto from '@temporalio/proto';
import type { Config } from './config.js';
import { openKeyring, readKeyring, type Keyring } from './keyring.js';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
// A CommonJS package: its namespace is a property of the default export under Node's ESM loader.
const { Payload: PayloadMessage } = proto.temporal.api.common.v1;

/** A payload the codec cannot open: names the key id and what went wrong, never the key. */
export class PayloadDecryptionError extends Error {
  override readonly name = 'PayloadDecryptionError';
}

const text = (bytes: Uint8Array | null | undefined) => (bytes ? Buffer.from(bytes).toString('utf8') : '');

export function isEncrypted(payload: Payload): boolean {
  return text(payload.metadata?.encoding) === ENCRYPTED_ENCODING;
}

/** Unknown key ids read the keyring file again at most this often (a rotation reaches running processes). */
const RELOAD_INTERVAL_MS = 1000;

export class AesGcmCodec implements PayloadCodec {
  private lastReload = 0;

  /**
   * With `reload`, a payload sealed with a key id this keyring does not hold makes the codec read
   * the keyring again: a key added by `imgflow keys rotate` (and copied here) is taken up without a
   * restart, and from then on the newest key seals.
   */
  constructor(
    private keyring: Keyring,
    private readonly reload?: () => Keyring,
  ) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => this.seal(p));
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    // Histories recorded before encryption hold plain payloads: they pass through unchanged.
    return payloads.map((p) => (isEncrypted(p) ? this.open(p) : p));
  }

  /** data = nonce (12) || ciphertext || tag (16); the key id is authenticated too, so it cannot be swapped. */
  seal(payload: Payload): Payload {
    const { id } = this.keyring.current;
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.keyring.key(id)!, nonce);
    cipher.setAAD(Buffer.from(id, 'utf8'));
    const sealed = Buffer.concat([
      nonce,
      cipher.update(PayloadMessage.encode(payload).finish()),
      cipher.final(),
      cipher.getAuthTag(),
    ]);
    return {
      metadata: { encoding: Buffer.from(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: Buffer.from(id, 'utf8') },
      data: sealed,
    };
  }

  open(payload: Payload): Payload {
    const id = text(payload.metadata?.[KEY_ID_METADATA]);
    if (!id) throw new PayloadDecryptionError(`encrypted payload has no ${KEY_ID_METADATA} metadata`);
    const key = this.keyring.key(id) ?? this.reloaded()?.key(id);
    if (!key)
      throw new PayloadDecryptionError(
        `payload encrypted with key id ${JSON.stringify(id.slice(0, 64))}, which the keyring ${this.keyring.file} does not hold`,
      );
    const data = Buffer.from(payload.data ?? []);
    if (data.length < NONCE_BYTES + TAG_BYTES)
      throw new PayloadDecryptionError(`encrypted payload (key id ${id}) is truncated`);
    const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.from(id, 'utf8'));
    decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
    let plain: Buffer;
    try {
      plain = Buffer.concat([decipher.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new PayloadDecryptionError(
        `encrypted payload (key id ${id}) failed authentication: altered, or sealed with another key of that id`,
      );
    }
    return PayloadMessage.decode(plain);
  }

  private reloaded(): Keyring | undefined {
    if (!this.reload || Date.now() - this.lastReload < RELOAD_INTERVAL_MS) return undefined;
    this.lastReload = Date.now();
    this.keyring = this.reload();
    return this.keyring;
  }
}

/**
 * The one data converter of every client and worker imgflow makes: payloads sealed with the
 * keyring of `config.codecKeys` (made on first use, read again when a payload names a newer key).
 */
export function imgflowDataConverter(config: Pick<Config, 'codecKeys'>): DataConverter {
  return {
    payloadCodecs: [new AesGcmCodec(openKeyring(config.codecKeys).keyring, () => readKeyring(config.codecKeys))],
  };
}
