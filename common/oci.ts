/**
 * References to artifacts in OCI registries: `<registry>/<repository>[:tag][@sha256:<hex>]`, with or
 * without an `oci://` prefix, and an `oci://` subscription's settings. Pure code, shared by the
 * CLI's checks, the subscription workflow and the activities.
 */
import { InputError } from './names.js';

export interface OciReference {
  /** host[:port], as the registry is dialled and as signatures name it. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const HOST =
  /^([A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;
/** The distribution spec's repository name grammar. */
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function checkDigest(field: string, value: unknown): string {
  if (typeof value !== 'string' || !DIGEST.test(value))
    throw new InputError(field, 'a digest sha256:<64 hex digits>', value);
  return value;
}

export function checkTag(field: string, value: unknown): string {
  if (typeof value !== 'string' || !TAG.test(value))
    throw new InputError(field, 'a tag of letters, digits, ".", "_" or "-" (at most 128)', value);
  return value;
}

/** Parses a reference; `field` names it in the refusal. */
export function parseReference(field: string, value: unknown): OciReference {
  const text = typeof value === 'string' ? value.replace(/^oci:\/\//, '') : '';
  const refusal = () =>
    new InputError(field, '<registry host[:port]>/<repository>[:tag][@sha256:<digest>] (lower-case repository)', value);
  if (!text || text.length > 1024 || /[\s\0]/.test(text)) throw refusal();
  const at = text.indexOf('@');
  const digest = at >= 0 ? text.slice(at + 1) : undefined;
  const named = at >= 0 ? text.slice(0, at) : text;
  const slash = named.indexOf('/');
  if (slash <= 0) throw refusal();
  const registry = named.slice(0, slash);
  let path = named.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
  }
  const host = HOST.exec(registry);
  const port = host?.[2] === undefined ? 443 : Number(host[2]);
  if (!host || port < 1 || port > 65535 || !REPOSITORY.test(path) || path.length > 255) throw refusal();
  if (tag !== undefined) checkTag(field, tag);
  if (digest !== undefined) checkDigest(field, digest);
  return {
    registry,
    repository: path,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/** The reference as text, `oci://` left off. */
export function formatReference(ref: OciReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** What a manifest is fetched by: its digest when known, else its tag. */
export function manifestRef(ref: OciReference): string {
  const by = ref.digest ?? ref.tag;
  if (!by) throw new InputError('reference', 'a tag or a digest', formatReference(ref));
  return by;
}

/** imgflow's architecture names against the OCI platform's (GOARCH) names. */
const PLATFORM_ARCH: Record<string, string> = {
  x86_64: 'amd64',
  aarch64: 'arm64',
  ppc64le: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  i686: '386',
  armv7l: 'arm',
};

export function platformArch(arch: string): string {
  return PLATFORM_ARCH[arch] ?? arch;
}

/** What an OCI subscription adds to its settings: paths on the workers, never their content. */
export interface OciSourceSettings {
  /** The public key (PEM, cosign.pub format) on the control worker; absent only with insecure. */
  keyFile?: string;
  /** The architecture picked from an index. */
  arch: string;
  credentialsFile?: string;
  caFile?: string;
  plainHttp?: boolean;
}

export const isOciUrl = (url: unknown): boolean => typeof url === 'string' && url.startsWith('oci://');

/** An `oci://<registry>/<repository>` subscription URL: no tag, no digest (every tag is listed). */
export function checkOciUrl(field: string, value: unknown): string {
  const ref = parseReference(field, value);
  if (ref.tag || ref.digest)
    throw new InputError(field, 'oci://<registry>/<repository> without a tag or digest (every tag is an image)', value);
  return value as string;
}

export function checkOciSettings(settings: OciSourceSettings | undefined, insecure: boolean): void {
  if (settings === undefined)
    throw new InputError('oci', 'the OCI settings of an oci:// subscription (--key, --arch)', settings);
  for (const field of ['keyFile', 'credentialsFile', 'caFile'] as const) {
    const value = settings[field];
    if (value !== undefined && (typeof value !== 'string' || !value.startsWith('/') || value.split('/').includes('..')))
      throw new InputError(field, 'an absolute path', value);
  }
  if (!insecure && settings.keyFile === undefined)
    throw new InputError(
      'key',
      'a public key to verify signatures with (or --insecure to skip signature checks)',
      settings.keyFile,
    );
  if (typeof settings.arch !== 'string' || !/^[a-z0-9_]{1,16}$/.test(settings.arch))
    throw new InputError('arch', 'an architecture such as x86_64', settings.arch);
}

/** An `oci://` subscription's URL and settings, as the subscription checks them. */
export function checkOciSource(url: unknown, settings: OciSourceSettings | undefined, insecure: boolean): void {
  checkOciUrl('url', url);
  checkOciSettings(settings, insecure);
}
