/**
 * An OCI repository as an image-list source, so a subscription to `oci://<registry>/<repository>`
 * goes through the same reconcile, convert and registry swap as a signed HEPiX list:
 * - listing (control worker): every tag (cosign's `sha256-*.sig|att|sbom` tags aside) is resolved
 *   for the subscription's arch and its signature verified with the subscription's public key
 *   before anything else is read; any tag that fails refuses the whole listing, naming the tag and
 *   the check. Each tag becomes one listed image `<repository name>-<tag>` whose URI names its disk
 *   layer by digest, so a tag that moves is an update, an unchanged digest is unchanged (nothing is
 *   downloaded), and a tag that disappears expires. Layers imgflow pushed carry their sha512; for
 *   another tool's, the listing hashes the blob once per digest and remembers it.
 * - download (cloud worker): the layer by digest, with resume, its sha256 and sha512 checked, into
 *   the same cache as list downloads.
 * With signature checks off (the subscription's explicit `--insecure`), every listed image says so
 * in its comments, and the list is marked unverified.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../../common/names.js';
import type { ImageList, ListedImage } from '../cloud/imagelist.js';
import type { VerifiedImageList } from '../cloud/smime.js';
import type { DownloadResult } from '../cloud/download.js';
import { A, diskLayers } from './artifact.js';
import { readPublicKey } from './cosign.js';
import { OciError } from './errors.js';
import {
  checkOciSettings,
  checkOciUrl,
  formatReference,
  parseReference,
  type OciReference,
  type OciSourceSettings,
} from '../../common/oci.js';

export { isOciUrl, type OciSourceSettings } from '../../common/oci.js';
import type { RegistryOptions } from './registry.js';
import { clientFor, resolveArtifact, type RegistryAccess } from './transfer.js';

const COSIGN_TAG = /^sha256-[0-9a-f]{64}\.(sig|att|sbom)$/;
const SAFE = /[^A-Za-z0-9._-]/g;

function accessOf(settings: OciSourceSettings): RegistryAccess {
  return {
    ...(settings.credentialsFile ? { credentialsFile: settings.credentialsFile } : {}),
    ...(settings.caFile ? { caFile: settings.caFile } : {}),
    ...(settings.plainHttp ? { plainHttp: true } : {}),
  };
}

/** The public key's identity as a subscription's endorser records it: its SPKI's sha256. */
export async function keyIdentity(keyFile: string): Promise<{ dn: string; ca: string; fingerprint: string }> {
  const key = await readPublicKey(keyFile);
  const fingerprint = createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex');
  return { dn: `/O=cosign/CN=sha256-${fingerprint.slice(0, 32)}`, ca: '/O=cosign/CN=public key', fingerprint };
}

export interface OciSourceDeps {
  /** Where the sha512 of other tools' layers is remembered, by digest. */
  stateDir: string;
  cacheDir: string;
  client?: Partial<RegistryOptions>;
}

/** The sha512 of a layer: its annotation, else remembered, else hashed from the blob once. */
async function layerSha512(
  deps: OciSourceDeps,
  client: Awaited<ReturnType<typeof clientFor>>,
  layer: { digest: string; size: number; annotations?: Record<string, string> },
): Promise<string> {
  const annotated =
    layer.annotations?.[A.sha512] ??
    (layer.annotations?.[A.glanceHashAlgo] === 'sha512' ? layer.annotations[A.glanceHashValue] : undefined);
  if (annotated && /^[0-9a-f]{128}$/.test(annotated)) return annotated;
  const memo = path.join(deps.stateDir, 'sha512', layer.digest.replace(':', '-'));
  const known = await fs.readFile(memo, 'utf8').then(
    (t) => t.trim(),
    () => undefined,
  );
  if (known && /^[0-9a-f]{128}$/.test(known)) return known;
  const scratch = path.join(deps.stateDir, 'scratch', layer.digest.replace(':', '-'));
  try {
    const got = await client.downloadBlob(layer, scratch);
    await fs.mkdir(path.dirname(memo), { recursive: true });
    await fs.writeFile(memo, `${got.sha512}\n`);
    return got.sha512;
  } finally {
    await fs.rm(scratch, { force: true });
    await fs.rm(`${scratch}.partial`, { force: true });
  }
}

export interface ListOciInput {
  subscription: string;
  url: string;
  oci: OciSourceSettings;
  insecure?: boolean;
  expectedIdentifier?: string;
  /** The endorser the subscription recorded: the key's identity (checked), or anything when insecure. */
  endorser?: { dn: string; ca: string };
}

/** The repository's tags as a verified image list (see the file's comment). */
export async function listOciRepository(input: ListOciInput, deps: OciSourceDeps): Promise<VerifiedImageList> {
  const repo = parseReference('url', checkOciUrl('url', input.url));
  const insecure = input.insecure === true;
  checkOciSettings(input.oci, insecure);
  const key = insecure || !input.oci.keyFile ? undefined : await readPublicKey(input.oci.keyFile);
  const identity = input.oci.keyFile ? await keyIdentity(input.oci.keyFile) : undefined;
  if (!insecure && input.endorser && identity && input.endorser.dn !== identity.dn)
    throw new OciError('key', `the subscription recorded key ${input.endorser.dn}, the key file is ${identity.dn}`);
  const client = await clientFor(repo, accessOf(input.oci), deps.client);
  try {
    const tags = (await client.listTags()).filter((t) => !COSIGN_TAG.test(t)).sort();
    const base = repo.repository.split('/').at(-1)!;
    const images: ListedImage[] = [];
    const lines: string[] = [];
    for (const tag of tags) {
      const ref: OciReference = { ...repo, tag };
      let resolved;
      try {
        resolved = await resolveArtifact(client, ref, input.oci.arch, key);
      } catch (error) {
        if (error instanceof OciError)
          throw new OciError(error.check, `tag ${tag}: ${error.message.replace(/^oci check "[^"]+" failed: /, '')}`);
        throw error;
      }
      const disks = diskLayers(resolved.manifest);
      if (disks.length !== 1)
        throw new OciError(
          'layers',
          `tag ${tag}: ${disks.length} disk layers (qcow2 or raw), imgflow registers exactly one`,
        );
      const layer = disks[0]!;
      const notes = resolved.manifest.annotations ?? {};
      const sha512 = await layerSha512(deps, client, layer);
      const marking = key
        ? `signature verified (key sha256:${identity!.fingerprint.slice(0, 16)}...)`
        : 'UNVERIFIED: signature checks are off for this subscription';
      images.push({
        identifier: `${base}-${tag}`.replace(SAFE, '_').slice(0, 128),
        title: notes[A.image] ? `${notes[A.image]} ${notes[A.imageVersion] ?? ''}`.trim() : `${repo.repository}:${tag}`,
        description: notes[A.description] ?? '',
        size: layer.size,
        sha512,
        uri: `oci://${formatReference({ registry: repo.registry, repository: repo.repository, digest: layer.digest })}`,
        version: notes[A.imageVersion] ?? notes[A.version] ?? resolved.manifestDigest.slice(7, 19),
        hypervisor: 'QEMU,KVM',
        format: layer.annotations?.[A.format] ?? (/qcow2/.test(layer.mediaType) ? 'qcow2' : 'raw'),
        arch: notes[A.arch] ?? input.oci.arch,
        os: notes[A.glanceOsDistro] ?? notes[A.os] ?? '',
        osVersion: notes[A.glanceOsVersion] ?? '',
        comments: `oci ${formatReference(ref)}@${resolved.manifestDigest}; ${marking}`,
      });
      lines.push(`${tag}@${resolved.manifestDigest}`);
    }
    const listVersion = createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16);
    const identifier =
      input.expectedIdentifier ??
      `oci:${repo.registry}:${repo.repository}`.replace(/[^A-Za-z0-9._:-]/g, '.').slice(0, 128);
    const endorser =
      identity && !insecure
        ? { dn: identity.dn, ca: identity.ca }
        : (input.endorser ?? { dn: '/O=cosign/CN=unverified', ca: '/O=cosign/CN=unverified' });
    const list: ImageList = {
      identifier,
      title: `OCI repository ${repo.registry}/${repo.repository}`,
      description: key
        ? 'tags of an OCI repository, each signature verified'
        : 'tags of an OCI repository, UNVERIFIED: signature checks are off',
      source: `oci://${repo.registry}/${repo.repository}`,
      version: listVersion,
      uri: input.url,
      created: new Date().toISOString(),
      expires: '9999-12-31T23:59:59Z',
      endorser: { ...endorser, email: '', creator: 'imgflow' },
      images,
    };
    return { list, verified: key !== undefined };
  } finally {
    client.close();
  }
}

export interface PullOciInput {
  image: ListedImage;
  oci: OciSourceSettings;
}

/** A listed image's disk layer into the download cache by sha512, digest-checked; nothing moves when it is there. */
export async function pullOciImage(input: PullOciInput, deps: OciSourceDeps): Promise<DownloadResult> {
  const ref = parseReference('uri', input.image.uri);
  if (!ref.digest) throw new InputError('uri', 'oci://<registry>/<repository>@sha256:<layer digest>', input.image.uri);
  const cached = path.join(deps.cacheDir, 'sha512', input.image.sha512);
  const size = await fs.stat(cached).then(
    (s) => s.size,
    () => undefined,
  );
  if (size === input.image.size)
    return { path: cached, sha512: input.image.sha512, bytes: size, cached: true, attempts: 0, resumedAt: [] };
  const client = await clientFor(ref, accessOf(input.oci), deps.client);
  try {
    const partialDir = path.join(deps.cacheDir, 'oci');
    const target = path.join(partialDir, ref.digest.replace(':', '-'));
    const got = await client.downloadBlob({ digest: ref.digest, size: input.image.size }, target);
    if (got.sha512 !== input.image.sha512) {
      await fs.rm(target, { force: true });
      throw new OciError(
        'digest',
        `layer ${ref.digest} has sha512 ${got.sha512.slice(0, 16)}..., the listing says ${input.image.sha512.slice(0, 16)}...`,
      );
    }
    await fs.mkdir(path.dirname(cached), { recursive: true });
    await fs.rename(target, cached);
    return { path: cached, sha512: got.sha512, bytes: got.bytes, cached: false, attempts: 1, resumedAt: got.resumedAt };
  } finally {
    client.close();
  }
}
