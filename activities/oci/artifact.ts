/**
 * How a version of an image becomes an OCI artifact, and how an artifact is read back. Pure code.
 *
 * One manifest per version: an OCI image manifest of artifact type `application/vnd.imgflow.image.v1`,
 * the empty config, one layer per artifact file (qcow2, raw, squashfs), each layer titled with its
 * file name (`org.opencontainers.image.title`, which `oras pull` writes the file as). Annotations
 * say what it is: the OpenStack Glance property names where Glance has one
 * (`org.openstack.glance.architecture`, `os_distro`, `disk_format`, `os_hash_algo`...), the OCI
 * pre-defined keys (`org.opencontainers.image.version`, `created`, `title`), and imgflow's own
 * `org.imgflow.*` for the rest (image, version, arch, sizes, digests, the build's provenance).
 * Nothing in the manifest depends on when or where it is pushed: the same version always gives the
 * same digest, which is what lets a second push upload nothing.
 */
import { MEDIA, type Descriptor, type Manifest } from './registry.js';
import { platformArch } from '../../common/oci.js';

export const ARTIFACT_TYPE = 'application/vnd.imgflow.image.v1';
export const EMPTY_CONFIG = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
} as const;
export const EMPTY_CONFIG_BYTES = Buffer.from('{}');
export const LAYER_TYPES = {
  qcow2: 'application/vnd.imgflow.image.layer.v1.qcow2',
  raw: 'application/vnd.imgflow.image.layer.v1.raw',
  squashfs: 'application/vnd.imgflow.image.layer.v1.squashfs',
} as const;
export type LayerFormat = keyof typeof LAYER_TYPES;

export const A = {
  title: 'org.opencontainers.image.title',
  created: 'org.opencontainers.image.created',
  version: 'org.opencontainers.image.version',
  description: 'org.opencontainers.image.description',
  glanceArch: 'org.openstack.glance.architecture',
  glanceOsDistro: 'org.openstack.glance.os_distro',
  glanceOsVersion: 'org.openstack.glance.os_version',
  glanceDiskFormat: 'org.openstack.glance.disk_format',
  glanceContainerFormat: 'org.openstack.glance.container_format',
  glanceHashAlgo: 'org.openstack.glance.os_hash_algo',
  glanceHashValue: 'org.openstack.glance.os_hash_value',
  glanceSize: 'org.openstack.glance.size',
  image: 'org.imgflow.image',
  imageVersion: 'org.imgflow.version',
  arch: 'org.imgflow.arch',
  os: 'org.imgflow.os',
  bytes: 'org.imgflow.bytes',
  format: 'org.imgflow.format',
  sha256: 'org.imgflow.sha256',
  sha512: 'org.imgflow.sha512',
  provenance: 'org.imgflow.provenance',
  recipeDigest: 'org.imgflow.recipe-digest',
  builtBy: 'org.imgflow.built-by',
  message: 'org.imgflow.message',
} as const;

/** What the push needs of a version: its record's fields, and each artifact with its sha512. */
export interface VersionArtifacts {
  image: string;
  version: string;
  arch: string;
  os: string;
  createdAt: string;
  by: string;
  message: string;
  recipeDigest: string;
  provenance: { builder: string; source: string; tools: Record<string, string>; workflowId: string };
  files: { format: LayerFormat; name: string; digest: string; sha512: string; bytes: number }[];
}

/** The OS name and version from a record's `os` ("debian-12", "Debian GNU/Linux 12 (bookworm)"...). */
export function osParts(os: string): { distro: string; version: string } {
  const m = /^([A-Za-z][A-Za-z0-9 ._/-]*?)[\s-]+v?(\d[\w.]*)/.exec(os);
  return m
    ? { distro: m[1]!.split(/[\s/]/)[0]!.toLowerCase(), version: m[2]! }
    : { distro: os.toLowerCase(), version: '' };
}

export function layerFor(file: VersionArtifacts['files'][number]): Descriptor {
  return {
    mediaType: LAYER_TYPES[file.format],
    digest: file.digest,
    size: file.bytes,
    annotations: {
      [A.title]: file.name,
      [A.format]: file.format,
      [A.glanceDiskFormat]: file.format === 'squashfs' ? 'raw' : file.format,
      [A.glanceContainerFormat]: 'bare',
      [A.glanceHashAlgo]: 'sha512',
      [A.glanceHashValue]: file.sha512,
      [A.glanceSize]: String(file.bytes),
      [A.sha256]: file.digest.slice('sha256:'.length),
      [A.sha512]: file.sha512,
      [A.bytes]: String(file.bytes),
    },
  };
}

export function versionManifest(v: VersionArtifacts): Manifest {
  const os = osParts(v.os);
  const bytes = v.files.reduce((sum, f) => sum + f.bytes, 0);
  return {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    artifactType: ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: v.files.map(layerFor),
    annotations: {
      [A.created]: v.createdAt,
      [A.version]: v.version,
      [A.description]: v.message,
      [A.glanceArch]: v.arch,
      [A.glanceOsDistro]: os.distro,
      ...(os.version ? { [A.glanceOsVersion]: os.version } : {}),
      [A.image]: v.image,
      [A.imageVersion]: v.version,
      [A.arch]: v.arch,
      [A.os]: v.os,
      [A.bytes]: String(bytes),
      [A.recipeDigest]: v.recipeDigest,
      [A.builtBy]: v.by,
      [A.provenance]: JSON.stringify(v.provenance),
    },
  };
}

/** The platform an artifact's manifest is for, as an index lists it. */
export const platformOf = (arch: string) => ({ architecture: platformArch(arch), os: 'linux' });

/** The disk layers of a manifest imgflow can register (qcow2 or raw), imgflow's or another tool's. */
export function diskLayers(manifest: Manifest): Descriptor[] {
  return manifest.layers.filter(
    (l) =>
      l.mediaType === LAYER_TYPES.qcow2 ||
      l.mediaType === LAYER_TYPES.raw ||
      /qcow2|raw|octet-stream|disk/i.test(l.mediaType) ||
      /\.(qcow2|img|raw)$/.test(l.annotations?.[A.title] ?? ''),
  );
}
