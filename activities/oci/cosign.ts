/**
 * Signatures as cosign stores them beside an artifact, so that `cosign verify --key` accepts what
 * imgflow signs and imgflow accepts what `cosign sign --key` signed:
 * - the signed bytes are a "simple signing" JSON payload naming the artifact's manifest digest
 *   (`critical.image.docker-manifest-digest`) and the repository (`critical.identity.docker-reference`),
 *   of type "cosign container image signature";
 * - the signature is ECDSA P-256 over the payload's SHA-256, DER-encoded, in base64, carried in the
 *   layer annotation `dev.cosignproject.cosign/signature`;
 * - the payload is a layer of media type `application/vnd.dev.cosign.simplesigning.v1+json` in an
 *   OCI image manifest tagged `sha256-<hex of the artifact's digest>.sig` in the same repository;
 *   several signatures are several layers of that manifest.
 * Public keys are PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign generate-key-pair` writes
 * cosign.pub; imgflow's private keys are PEM PKCS#8, kept on the host that signs.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import { InputError } from '../../common/names.js';
import { OciError } from './errors.js';
import { digestOf, MEDIA, type Descriptor, type Manifest, type RegistryClient } from './registry.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const SIGNATURE_TYPE = 'cosign container image signature';

/** The tag cosign keeps an artifact's signatures under. */
export function signatureTag(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new InputError('digest', 'sha256:<64 hex digits>', digest);
  return digest.replace(':', '-') + '.sig';
}

/** The payload cosign signs for a manifest digest in a repository (`<registry>/<repository>`). */
export function simpleSigningPayload(dockerReference: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: {
        identity: { 'docker-reference': dockerReference },
        image: { 'docker-manifest-digest': digest },
        type: SIGNATURE_TYPE,
      },
      optional: null,
    }),
  );
}

function checkP256(key: KeyObject, file: string): KeyObject {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new InputError('key', 'an ECDSA P-256 key', file);
  return key;
}

/** A public key from PEM (cosign.pub's format); refused unless ECDSA P-256. */
export function publicKeyFrom(pem: string, file = 'key'): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new InputError('key', 'a PEM public key (-----BEGIN PUBLIC KEY-----)', file);
  }
  return checkP256(key, file);
}

export async function readPublicKey(file: string): Promise<KeyObject> {
  const pem = await fs.readFile(file, 'utf8').catch(() => {
    throw new InputError('key', 'a public key file this worker can read', file);
  });
  return publicKeyFrom(pem, file);
}

export async function readPrivateKey(file: string): Promise<KeyObject> {
  const pem = await fs.readFile(file, 'utf8').catch(() => {
    throw new InputError('signing-key', 'a private key file this worker can read', file);
  });
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new InputError('signing-key', 'an unencrypted PEM private key (PKCS#8 or SEC1)', file);
  }
  return checkP256(key, file);
}

/** A new P-256 key pair: PKCS#8 private key and SubjectPublicKeyInfo public key, both PEM. */
export function generateSigningKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
  };
}

export function signPayload(key: KeyObject, payload: Buffer): string {
  return sign('sha256', payload, { key, dsaEncoding: 'der' }).toString('base64');
}

export function verifyPayload(key: KeyObject, payload: Buffer, signature: string): boolean {
  try {
    return verify('sha256', payload, { key, dsaEncoding: 'der' }, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

/** What a payload says, checked to be a cosign signature of `digest`. */
function payloadNames(payload: Buffer, digest: string): boolean {
  try {
    const body = JSON.parse(payload.toString('utf8')) as {
      critical?: { type?: string; image?: { 'docker-manifest-digest'?: string } };
    };
    return body.critical?.type === SIGNATURE_TYPE && body.critical.image?.['docker-manifest-digest'] === digest;
  } catch {
    return false;
  }
}

/** The signature manifest's config: an image config naming the payloads as its layers. */
function signatureConfig(layers: Descriptor[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: '',
      os: '',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  );
}

/**
 * Signs `digest` in the client's repository, unless a signature by this key for it is already
 * there; returns whether a new signature was pushed. Other signatures stay beside it.
 */
export async function pushSignature(
  client: RegistryClient,
  digest: string,
  key: KeyObject,
): Promise<{ signed: boolean; tag: string }> {
  const tag = signatureTag(digest);
  const publicKey = createPublicKey(key);
  const existing = await client.getManifest(tag, { missingOk: true });
  const layers: Descriptor[] = existing && 'layers' in existing.json ? [...existing.json.layers] : [];
  for (const layer of layers) {
    if (layer.mediaType !== SIMPLE_SIGNING || !layer.annotations?.[SIGNATURE_ANNOTATION]) continue;
    const payload = await client.getBlob(layer.digest);
    if (payloadNames(payload, digest) && verifyPayload(publicKey, payload, layer.annotations[SIGNATURE_ANNOTATION]))
      return { signed: false, tag };
  }
  const payload = simpleSigningPayload(`${client.registry}/${client.repository}`, digest);
  const layer: Descriptor = {
    mediaType: SIMPLE_SIGNING,
    digest: digestOf(payload),
    size: payload.length,
    annotations: { [SIGNATURE_ANNOTATION]: signPayload(key, payload) },
  };
  await client.pushBlob(layer.digest, payload.length, payload);
  layers.push(layer);
  const config = signatureConfig(layers);
  await client.pushBlob(digestOf(config), config.length, config);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
    layers,
  };
  await client.putManifest(tag, Buffer.from(JSON.stringify(manifest)), MEDIA.ociManifest);
  return { signed: true, tag };
}

/**
 * Finds a signature of `digest` by `key` in the client's repository; refuses, naming the check,
 * when there is no signature at all ("signature": unsigned) or none by this key ("signature-key").
 * Every payload's digest is checked before it is read.
 */
export async function verifySignature(
  client: RegistryClient,
  digest: string,
  key: KeyObject,
): Promise<{ tag: string; layer: string }> {
  const tag = signatureTag(digest);
  const found = await client.getManifest(tag, { missingOk: true });
  if (!found || !('layers' in found.json))
    throw new OciError('signature', `${client.repository}@${digest} is not signed (no ${tag})`);
  const candidates = found.json.layers.filter(
    (l) => l.mediaType === SIMPLE_SIGNING && typeof l.annotations?.[SIGNATURE_ANNOTATION] === 'string',
  );
  if (!candidates.length) throw new OciError('signature', `${tag} holds no cosign signature`);
  for (const layer of candidates) {
    if (layer.size > 64 * 1024) continue;
    const payload = await client.getBlob(layer.digest, 64 * 1024);
    if (!payloadNames(payload, digest)) continue;
    if (verifyPayload(key, payload, layer.annotations![SIGNATURE_ANNOTATION]!)) return { tag, layer: layer.digest };
  }
  throw new OciError(
    'signature-key',
    `none of the ${candidates.length} signatures of ${client.repository}@${digest} is by the given key`,
  );
}
