/**
 * A subscription's settings and the names it gives images: pure checks and names, shared by the
 * subscription workflows and the CLI.
 */
import { checkHost, checkName, InputError } from './names.js';
import { checkOciSource, isOciUrl, type OciSourceSettings } from './oci.js';

export const NEW_IMAGE_POLICIES = ['accept', 'subscribe', 'refuse'] as const;
export type NewImagePolicy = (typeof NEW_IMAGE_POLICIES)[number];
export const REGISTRY_KINDS = ['catalog', 'opennebula'] as const;
export type RegistryKind = (typeof REGISTRY_KINDS)[number];
export const DISK_FORMATS = ['qcow2', 'raw'] as const;

/** What a subscription remembers of how it was made. Paths and names only: no password. */
export interface SubscriptionConfig {
  name: string;
  url: string;
  /** The list's dc:identifier; when absent, the first verified list fixes it. */
  identifier?: string;
  endorser: { dn: string; ca: string };
  caDir?: string;
  /** Skips signature checks; only ever set by an explicit `--insecure`. */
  insecure?: boolean;
  /** How often the schedule asks for a sync, e.g. "6h". */
  every: string;
  newImages: NewImagePolicy;
  registry: RegistryKind;
  username?: string;
  /** The file the registry password is read from on the cloud worker; never its content. */
  passwordFile?: string;
  /** The file holding `user:token` for the list's host, read by the control and cloud workers; never its content. */
  credentialsFile?: string;
  format: (typeof DISK_FORMATS)[number];
  /** Syncs stage changed images under `<id>+STAGED` and report; `adopt` applies. */
  stage: boolean;
  /** The cloud site whose worker (`cloud.<site>`) holds the registry. */
  site: string;
  /** How long a step may wait for a worker of its queue before failing. */
  workerWaitSeconds?: number;
  /** An `oci://` subscription's key, arch and registry access (paths on the workers). */
  oci?: OciSourceSettings;
}

/** One `KEY=value` of a slash-form DN; a `/` not followed by a key continues the value (CN=host/name.example.org). */
const DN_ATTRIBUTE = /^[A-Za-z][A-Za-z0-9.]*=[^\n]+$/;
const EVERY = /^([1-9]\d{0,3})([mhd])$/;
const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

function oneOf<T extends string>(field: string, allowed: readonly T[], value: unknown): T {
  if (!allowed.includes(value as T)) throw new InputError(field, `one of ${allowed.join(', ')}`, value);
  return value as T;
}

/** A distinguished name in the slash form lists use: /C=CH/O=Org/CN=Name. */
export function checkDn(field: string, value: unknown): string {
  const attributes =
    typeof value === 'string' && value.startsWith('/') ? value.slice(1).split(/\/(?=[A-Za-z][A-Za-z0-9.]*=)/) : [];
  // Blanks around a DN can never match the name openssl prints for a signer.
  if (
    typeof value !== 'string' ||
    value.length > 512 ||
    value !== value.trim() ||
    !attributes.every((a) => DN_ATTRIBUTE.test(a)) ||
    !attributes.length
  ) {
    throw new InputError(
      field,
      'a distinguished name in slash form without blanks around it, such as /C=CH/O=Org/CN=Name',
      value,
    );
  }
  return value;
}

/** http(s), a host name or an IP address (IPv6 in brackets), an optional port, a path without blanks. */
/** `user:token@` (or `token@`) before the host. */
const CREDENTIALS = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/@\s]*@/;
const LIST_URL = /^https?:\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(\/\S*)?$/;

/** A list's URL as `sync` will fetch it: what it would refuse later is refused at subscribe. */
export function checkListUrl(field: string, value: unknown): string {
  if (typeof value === 'string' && CREDENTIALS.test(value)) {
    // Never shown back: the refusal would print the token.
    throw new InputError(
      field,
      'a URL without credentials (put user:token in a file and give it as --credentials-file)',
      value.replace(CREDENTIALS, '$1<credentials>@'),
    );
  }
  const m = typeof value === 'string' && value.length <= 2048 ? LIST_URL.exec(value) : null;
  const port = m?.[2] === undefined ? 80 : Number(m[2]);
  if (!m || port < 1 || port > 65535)
    throw new InputError(
      field,
      'an http(s) URL without credentials: a host name or [IPv6] address, a port from 1 to 65535',
      value,
    );
  return m[0];
}

/** Minutes, hours or days, at least one minute, at most 30 days. */
export function checkEvery(field: string, value: unknown): string {
  const m = typeof value === 'string' ? EVERY.exec(value) : null;
  const minutes = m ? Number(m[1]) * { m: 1, h: 60, d: 1440 }[m[2] as 'm' | 'h' | 'd'] : 0;
  if (!m || minutes > 30 * 1440) throw new InputError(field, 'an interval such as 30m, 6h or 1d (at most 30d)', value);
  return value as string;
}

export function checkAbsolutePath(field: string, value: unknown): string {
  if (
    typeof value !== 'string' ||
    !value.startsWith('/') ||
    value.split('/').includes('..') ||
    /[\0\n]/.test(value) ||
    value.length > 1024
  ) {
    throw new InputError(field, 'an absolute path without ".."', value);
  }
  return value;
}

/** The list identifier: what a HEPiX list puts in dc:identifier (often a UUID). */
export function checkListIdentifier(field: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(value))
    throw new InputError(field, 'a list identifier of letters, digits, ".", "_", ":" or "-"', value);
  return value;
}

export function checkSubscriptionConfig(config: SubscriptionConfig): SubscriptionConfig {
  if (typeof config !== 'object' || config === null)
    throw new InputError('subscription', 'the subscription settings', config);
  checkName('subscription', config.name);
  if (isOciUrl(config.url)) checkOciSource(config.url, config.oci, config.insecure === true);
  else checkListUrl('url', config.url);
  if (config.identifier !== undefined) checkListIdentifier('identifier', config.identifier);
  checkDn('endorser-dn', config.endorser?.dn);
  checkDn('endorser-ca', config.endorser?.ca);
  if (config.caDir !== undefined) checkAbsolutePath('ca-dir', config.caDir);
  if (config.insecure !== undefined && typeof config.insecure !== 'boolean')
    throw new InputError('insecure', 'true or false', config.insecure);
  checkEvery('every', config.every);
  oneOf('new-images', NEW_IMAGE_POLICIES, config.newImages);
  oneOf('registry', REGISTRY_KINDS, config.registry);
  if (config.username !== undefined && (typeof config.username !== 'string' || !USERNAME.test(config.username)))
    throw new InputError('username', 'a user name of letters, digits, ".", "_", "@" or "-"', config.username);
  if (config.passwordFile !== undefined) checkAbsolutePath('password-file', config.passwordFile);
  if (config.credentialsFile !== undefined) checkAbsolutePath('credentials-file', config.credentialsFile);
  oneOf('format', DISK_FORMATS, config.format);
  if (typeof config.stage !== 'boolean') throw new InputError('stage', 'true or false', config.stage);
  checkHost('site', config.site);
  return config;
}

/** `<id>_EXPIRED_<YYYY-mm-dd_HH-MM-SS>_UTC`, from workflow time: names sort by time across sites. */
export function parkedName(identifier: string, when: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getUTCFullYear()}-${p(when.getUTCMonth() + 1)}-${p(when.getUTCDate())}_${p(when.getUTCHours())}-${p(when.getUTCMinutes())}-${p(when.getUTCSeconds())}`;
  return `${identifier}_EXPIRED_${stamp}_UTC`;
}

/**
 * `<id>+STAGED`: where a staged sync registers an image for the site to try before `adopt`. "+" is
 * allowed in registry names but never in list identifiers, so no listed image, and no
 * `_EXPIRED_` name, can ever be called this.
 */
export function stagedName(identifier: string): string {
  return `${identifier}+STAGED`;
}
