/**
 * Push and pull of imgflow versions through a registry, with the signature step on each side:
 * - push: every file's digests checked against the version's record, blobs the registry lacks
 *   uploaded (none on a second push), the manifest put under the tag unless the tag already names
 *   it, and a cosign-compatible signature added unless one by the same key is there;
 * - resolve: a tag (or digest) to the one manifest for an architecture, an index's platform chosen
 *   or refused, and the signature checked before anything else is read;
 * - pull: the resolved manifest's disk layers downloaded with resume and digest checks.
 */
import { createHash, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline, Transform, type Readable } from 'node:stream';
import { InputError } from '../../common/names.js';
import {
  A,
  diskLayers,
  EMPTY_CONFIG,
  EMPTY_CONFIG_BYTES,
  versionManifest,
  type LayerFormat,
  type VersionArtifacts,
} from './artifact.js';
import { pushSignature, verifySignature } from './cosign.js';
import { OciError } from './errors.js';
import { formatReference, manifestRef, platformArch, type OciReference } from '../../common/oci.js';
import {
  digestOf,
  hashFile,
  INDEX_TYPES,
  MANIFEST_TYPES,
  RegistryClient,
  type FetchedManifest,
  type Index,
  type Manifest,
  type RegistryOptions,
} from './registry.js';

/** Where the registry's credentials and CA are on the worker: paths only, never their content. */
export interface RegistryAccess {
  /** First line `user:password`. */
  credentialsFile?: string;
  /** PEM of the CA the registry's certificate comes from. */
  caFile?: string;
  /** Plain http: only for registries on loopback. */
  plainHttp?: boolean;
}

export async function clientFor(
  ref: OciReference,
  access: RegistryAccess = {},
  extra: Partial<RegistryOptions> = {},
): Promise<RegistryClient> {
  const options: RegistryOptions = { ...extra };
  if (access.credentialsFile) {
    const line = await fsp.readFile(access.credentialsFile, 'utf8').then(
      (text) => text.split('\n')[0]!.trim(),
      () => {
        throw new InputError('credentials-file', 'a file this worker can read', access.credentialsFile);
      },
    );
    const colon = line.indexOf(':');
    if (colon <= 0)
      throw new InputError('credentials-file', 'a file whose first line is user:password', access.credentialsFile);
    options.credentials = { username: line.slice(0, colon), password: line.slice(colon + 1) };
  }
  if (access.caFile) {
    options.ca = await fsp.readFile(access.caFile, 'utf8').catch(() => {
      throw new InputError('ca-file', 'a PEM file this worker can read', access.caFile);
    });
  }
  if (access.plainHttp) {
    if (!/^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(ref.registry))
      throw new InputError('plain-http', 'a registry on loopback (plain http is for tests only)', ref.registry);
    options.plainHttp = true;
  }
  return new RegistryClient(ref.registry, ref.repository, options);
}

export interface PushFile {
  format: LayerFormat;
  path: string;
  sha256: string;
  bytes: number;
}

export interface PushResult {
  reference: string;
  digest: string;
  /** Blobs sent and their bytes: zero on a push of what the registry already holds. */
  uploadedBlobs: number;
  uploadedBytes: number;
  manifestPut: boolean;
  signed: boolean;
  signatureTag: string;
}

function notRecorded(file: PushFile, hashed: { sha256: string; bytes: number }): OciError {
  return new OciError(
    'digest',
    `${file.path} is ${hashed.sha256} (${hashed.bytes} bytes), the version recorded sha256:${file.sha256} (${file.bytes} bytes)`,
  );
}

/** A file's bytes as a stream, hashed (sha256 and sha512) as they are read. */
function hashingReader(file: string): {
  stream: Readable;
  result: () => { sha256: string; sha512: string; bytes: number };
} {
  const a = createHash('sha256');
  const b = createHash('sha512');
  let bytes = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, done) {
      a.update(chunk);
      b.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  const stream = pipeline(fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 }), hasher, () => {});
  return {
    stream,
    // Copies: the digests of what has passed so far (all of it once the upload is answered).
    result: () => ({ sha256: `sha256:${a.copy().digest('hex')}`, sha512: b.copy().digest('hex'), bytes }),
  };
}

/** Pushes a version (files on this host) under `ref`'s tag and signs it with `key`. */
export async function pushVersion(
  client: RegistryClient,
  ref: OciReference,
  version: Omit<VersionArtifacts, 'files'>,
  files: PushFile[],
  key: KeyObject,
): Promise<PushResult> {
  if (!ref.tag) throw new InputError('to', 'a reference with a tag to push under', formatReference(ref));
  // Before anything is sent: every file readable and of the size recorded.
  for (const file of files) {
    if (!/^[0-9a-f]{64}$/.test(file.sha256)) throw new InputError('sha256', '64 hex digits', file.sha256);
    const size = await fsp.open(file.path, 'r').then(
      async (handle) => {
        try {
          return (await handle.stat()).size;
        } finally {
          await handle.close();
        }
      },
      () => {
        throw new OciError('artifact', `${file.path} cannot be read on this host`);
      },
    );
    if (size !== file.bytes) throw notRecorded(file, await hashFile(file.path));
  }
  let uploadedBlobs = 0;
  let uploadedBytes = 0;
  if (await client.pushBlob(EMPTY_CONFIG.digest, EMPTY_CONFIG.size, EMPTY_CONFIG_BYTES)) uploadedBlobs++;
  const described: VersionArtifacts['files'] = [];
  for (const file of files) {
    // Each file is read once: hashed as it is uploaded under the digest recorded (the registry
    // refuses bytes that are not that digest), or, when the registry already holds it, hashed for
    // its sha512 alone.
    let hashing: ReturnType<typeof hashingReader> | undefined;
    let uploaded: boolean;
    try {
      uploaded = await client.pushBlob(`sha256:${file.sha256}`, file.bytes, () => {
        hashing = hashingReader(file.path);
        return hashing.stream;
      });
    } catch (error) {
      const hashed = hashing?.result();
      if (hashed && hashed.bytes === file.bytes && hashed.sha256 !== `sha256:${file.sha256}`)
        throw notRecorded(file, hashed);
      throw error;
    }
    const hashed = uploaded ? hashing!.result() : await hashFile(file.path);
    // The store's copy must still be the one the version recorded.
    if (hashed.sha256 !== `sha256:${file.sha256}` || hashed.bytes !== file.bytes) throw notRecorded(file, hashed);
    if (uploaded) {
      uploadedBlobs++;
      uploadedBytes += file.bytes;
    }
    described.push({
      format: file.format,
      name: `${version.image}-${version.version}.${file.format}`,
      digest: hashed.sha256,
      sha512: hashed.sha512,
      bytes: hashed.bytes,
    });
  }
  const manifest = Buffer.from(JSON.stringify(versionManifest({ ...version, files: described })));
  const digest = digestOf(manifest);
  const current = await client.headManifest(ref.tag);
  const manifestPut = current !== digest;
  if (manifestPut) await client.putManifest(ref.tag, manifest, 'application/vnd.oci.image.manifest.v1+json');
  const signature = await pushSignature(client, digest, key);
  return {
    reference: `${ref.registry}/${ref.repository}:${ref.tag}@${digest}`,
    digest,
    uploadedBlobs,
    uploadedBytes,
    manifestPut,
    signed: signature.signed,
    signatureTag: signature.tag,
  };
}

export interface Resolved {
  /** The digest the tag names (an index's, when it names an index). */
  digest: string;
  /** The digest of the manifest for the architecture. */
  manifestDigest: string;
  manifest: Manifest;
  /** The digest whose signature was verified; absent when verification was skipped. */
  verifiedDigest?: string;
}

function isIndex(fetched: FetchedManifest): fetched is FetchedManifest & { json: Index } {
  return INDEX_TYPES.includes(fetched.mediaType);
}

/**
 * The manifest `ref` names for `arch`, its signature verified with `key` (on the index or on the
 * platform's manifest) before any layer is read. Without a key, verification is skipped and the
 * result says so (no `verifiedDigest`).
 */
export async function resolveArtifact(
  client: RegistryClient,
  ref: OciReference,
  arch: string,
  key: KeyObject | undefined,
): Promise<Resolved> {
  const top = await client.getManifest(manifestRef(ref));
  if (!top) throw new OciError('not-found', `${formatReference(ref)} is not in the registry`);
  let manifestFetched = top;
  if (isIndex(top)) {
    const wanted = platformArch(arch);
    const entries = top.json.manifests ?? [];
    const matching = entries.filter(
      (m) => m.platform?.architecture === wanted && (m.platform.os ?? 'linux') === 'linux',
    );
    if (matching.length !== 1) {
      const have = entries
        .map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'no platform'))
        .join(', ');
      throw new OciError(
        'platform',
        `${formatReference(ref)} is an index of ${entries.length} manifests (${have || 'none'}): ${matching.length ? 'several are' : 'none is'} for linux/${wanted}`,
      );
    }
    if (!MANIFEST_TYPES.includes(matching[0]!.mediaType))
      throw new OciError('media-type', `the index entry for linux/${wanted} is ${matching[0]!.mediaType}`);
    // Verify before reading further: a signature on the index covers the digests it lists.
    let verifiedDigest: string | undefined;
    if (key) {
      try {
        verifiedDigest = (await verifySignature(client, top.digest, key), top.digest);
      } catch (error) {
        if (!(error instanceof OciError)) throw error;
        verifiedDigest = (await verifySignature(client, matching[0]!.digest, key), matching[0]!.digest);
      }
    }
    manifestFetched = (await client.getManifest(matching[0]!.digest))!;
    if (!MANIFEST_TYPES.includes(manifestFetched.mediaType))
      throw new OciError('media-type', `${matching[0]!.digest} is ${manifestFetched.mediaType}`);
    return {
      digest: top.digest,
      manifestDigest: manifestFetched.digest,
      manifest: manifestFetched.json as Manifest,
      ...(verifiedDigest ? { verifiedDigest } : {}),
    };
  }
  if (key) await verifySignature(client, top.digest, key);
  const manifest = top.json as Manifest;
  if (!Array.isArray(manifest.layers)) throw new OciError('manifest', `${top.digest} has no layers`);
  return { digest: top.digest, manifestDigest: top.digest, manifest, ...(key ? { verifiedDigest: top.digest } : {}) };
}

export interface PulledFile {
  name: string;
  format: string;
  path: string;
  digest: string;
  sha512: string;
  bytes: number;
  cached: boolean;
  resumedAt: number[];
  transferred: number;
}

/** A safe file name for a layer: its title when it is one, else its digest. */
function layerName(layer: { digest: string; annotations?: Record<string, string> }): string {
  const title = layer.annotations?.[A.title];
  return title && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(title) ? title : layer.digest.replace(':', '-');
}

/**
 * Downloads the manifest's disk layers (all layers with `all`) into `dir`, keyed by digest so that a
 * digest already there is not downloaded again.
 */
export async function pullLayers(
  client: RegistryClient,
  manifest: Manifest,
  dir: string,
  options: { all?: boolean } = {},
): Promise<PulledFile[]> {
  const layers = options.all ? manifest.layers : diskLayers(manifest);
  if (!layers.length)
    throw new OciError(
      'layers',
      `the manifest has no disk layer (qcow2 or raw): ${manifest.layers.map((l) => l.mediaType).join(', ') || 'no layers'}`,
    );
  const out: PulledFile[] = [];
  for (const layer of layers) {
    const target = path.join(dir, layer.digest.replace(':', '-'));
    const name = layerName(layer);
    const format = layer.annotations?.[A.format] ?? (/qcow2/.test(layer.mediaType + name) ? 'qcow2' : 'raw');
    const cachedSize = await fsp.stat(target).then(
      (s) => s.size,
      () => -1,
    );
    if (cachedSize === layer.size) {
      const sha512 = layer.annotations?.[A.sha512] ?? (await hashFile(target)).sha512;
      out.push({
        name,
        format,
        path: target,
        digest: layer.digest,
        sha512,
        bytes: layer.size,
        cached: true,
        resumedAt: [],
        transferred: 0,
      });
      continue;
    }
    const got = await client.downloadBlob(layer, target);
    const claimed = layer.annotations?.[A.sha512];
    if (claimed && claimed !== got.sha512) {
      await fsp.rm(target, { force: true });
      throw new OciError(
        'digest',
        `layer ${layer.digest} has sha512 ${got.sha512.slice(0, 16)}..., its annotation says ${claimed.slice(0, 16)}...`,
      );
    }
    out.push({
      name,
      format,
      path: target,
      digest: layer.digest,
      sha512: got.sha512,
      bytes: got.bytes,
      cached: false,
      resumedAt: got.resumedAt,
      transferred: got.transferred,
    });
  }
  return out;
}
