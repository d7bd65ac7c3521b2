/**
 * HEPiX image lists: parsing, the checks a subscription applies before trusting a list, and the
 * reconciliation of a list against the images a registry already holds. Pure code: no I/O, so the
 * same rules hold in activities and in tests, and every refusal names the check that failed.
 */
import type { RegistryImage } from './registry/types.js';
import { TEMPLATE } from './registry/types.js';

/** A list refused by one named check; never worth retrying with the same list. */
export class ImageListError extends Error {
  override readonly name = 'ImageListError';
  constructor(
    readonly check: string,
    detail: string,
  ) {
    super(`image list check "${check}" failed: ${detail}`);
  }
}

export interface Endorser {
  dn: string;
  ca: string;
  email: string;
  creator: string;
}

export interface ListedImage {
  identifier: string;
  title: string;
  description: string;
  size: number;
  sha512: string;
  uri: string;
  version: string;
  hypervisor: string;
  format?: string;
  arch: string;
  os: string;
  osVersion: string;
  comments: string;
  marketplaceUri?: string;
  /** The image's own `dc:date:expires`, when the list gives one: past it, the image is not offered. */
  expires?: string;
}

export interface ImageList {
  identifier: string;
  title: string;
  description: string;
  source: string;
  version: string;
  uri: string;
  /** ISO 8601, as given by the endorser. */
  created: string;
  expires: string;
  vo?: string;
  endorser: Endorser;
  images: ListedImage[];
}

/** What a subscription expects of the next list it applies. */
export interface ListExpectations {
  /** Absent on a subscription's first list, which then fixes it (after the signer was checked). */
  identifier?: string;
  /** The version of the list last applied; a lower one is a replay and is refused. */
  lastAppliedVersion?: string;
  /** Accept an expired list, so that its images can be expired; it is never applied otherwise. */
  allowExpired?: boolean;
  now?: Date;
}

/** Image identifiers become registry names and file names: nothing that could be a path. */
const SAFE_IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SHA512 = /^[0-9a-fA-F]{128}$/;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field(where: Json, key: string, path: string): unknown {
  if (!(key in where) || where[key] === null || where[key] === undefined) {
    throw new ImageListError('required-fields', `${path}${key} is missing`);
  }
  return where[key];
}

function text(where: Json, key: string, path: string): string {
  const value = field(where, key, path);
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new ImageListError('required-fields', `${path}${key} must be a string`);
  }
  return String(value);
}

function optionalText(where: Json, key: string, path: string): string | undefined {
  return where[key] === undefined || where[key] === null ? undefined : text(where, key, path);
}

function optionalTimestamp(where: Json, key: string, path: string): string | undefined {
  return where[key] === undefined || where[key] === null ? undefined : timestamp(where, key, path);
}

function timestamp(where: Json, key: string, path: string): string {
  const value = text(where, key, path);
  if (Number.isNaN(Date.parse(value)))
    throw new ImageListError('required-fields', `${path}${key} is not a date: ${JSON.stringify(value)}`);
  return value;
}

function parseEndorser(list: Json): Endorser {
  const endorser = field(list, 'hv:endorser', '');
  const x509 = isObject(endorser) ? endorser['hv:x509'] : undefined;
  if (!isObject(x509)) throw new ImageListError('required-fields', 'hv:endorser.hv:x509 is missing');
  const at = 'hv:endorser.hv:x509.';
  return {
    dn: text(x509, 'hv:dn', at),
    ca: text(x509, 'hv:ca', at),
    email: text(x509, 'hv:email', at),
    creator: text(x509, 'dc:creator', at),
  };
}

function parseImage(entry: unknown, index: number): ListedImage {
  const image = isObject(entry) ? entry['hv:image'] : undefined;
  const at = `hv:images[${index}].hv:image.`;
  if (!isObject(image)) throw new ImageListError('required-fields', `hv:images[${index}].hv:image is missing`);
  const identifier = text(image, 'dc:identifier', at);
  if (!SAFE_IDENTIFIER.test(identifier) || identifier.includes('..')) {
    throw new ImageListError(
      'image-identifier',
      `${at}dc:identifier must be letters, digits, ".", "_" or "-" (no path characters), got ${JSON.stringify(identifier)}`,
    );
  }
  const sha512 = text(image, 'sl:checksum:sha512', at);
  if (!SHA512.test(sha512))
    throw new ImageListError('required-fields', `${at}sl:checksum:sha512 must be 128 hex digits`);
  const size = Number(text(image, 'hv:size', at));
  if (!Number.isSafeInteger(size) || size < 0)
    throw new ImageListError('required-fields', `${at}hv:size must be a whole number of bytes`);
  const uri = text(image, 'hv:uri', at);
  if (!/^https?:\/\//.test(uri)) throw new ImageListError('required-fields', `${at}hv:uri must be an http(s) URL`);
  return {
    identifier,
    title: text(image, 'dc:title', at),
    description: text(image, 'dc:description', at),
    size,
    sha512: sha512.toLowerCase(),
    uri,
    version: text(image, 'hv:version', at),
    hypervisor: text(image, 'hv:hypervisor', at),
    format: optionalText(image, 'hv:format', at),
    arch: text(image, 'sl:arch', at),
    os: text(image, 'sl:os', at),
    osVersion: text(image, 'sl:osversion', at),
    comments: text(image, 'sl:comments', at),
    marketplaceUri: optionalText(image, 'ad:mpuri', at),
    expires: optionalTimestamp(image, 'dc:date:expires', at),
  };
}

/** Parses the (already verified) body of a list; structure only, no time or version checks. */
export function parseImageList(body: string): ImageList {
  let document: unknown;
  try {
    document = JSON.parse(body);
  } catch (error) {
    throw new ImageListError('json', `the list is not valid JSON: ${(error as Error).message}`);
  }
  const list = isObject(document) ? document['hv:imagelist'] : undefined;
  if (!isObject(list)) throw new ImageListError('required-fields', 'hv:imagelist is missing');
  const images = field(list, 'hv:images', '');
  if (!Array.isArray(images)) throw new ImageListError('required-fields', 'hv:images must be an array');
  const parsed = images.map(parseImage);
  const seen = new Set<string>();
  for (const image of parsed) {
    if (seen.has(image.identifier))
      throw new ImageListError('image-identifier', `dc:identifier ${image.identifier} appears twice`);
    seen.add(image.identifier);
  }
  return {
    identifier: text(list, 'dc:identifier', ''),
    title: text(list, 'dc:title', ''),
    description: text(list, 'dc:description', ''),
    source: text(list, 'dc:source', ''),
    version: text(list, 'hv:version', ''),
    uri: text(list, 'hv:uri', ''),
    created: timestamp(list, 'dc:date:created', ''),
    expires: timestamp(list, 'dc:date:expires', ''),
    vo: optionalText(list, 'ad:vo', ''),
    endorser: parseEndorser(list),
    images: parsed,
  };
}

/**
 * Orders versions such as "1.10" > "1.9" and "20240102" > "20240101": dot- or dash-separated parts
 * compare as numbers when both are numbers, as text otherwise.
 */
export function compareVersions(a: string, b: string): number {
  const left = a.split(/[.-]/);
  const right = b.split(/[.-]/);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const x = left[i] ?? '';
    const y = right[i] ?? '';
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) < Number(y) ? -1 : 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

export function isExpired(item: { expires?: string }, now = new Date()): boolean {
  return item.expires !== undefined && Date.parse(item.expires) <= now.getTime();
}

/** The checks that decide whether a parsed list may be applied to a subscription. */
export function checkImageList(list: ImageList, expected: ListExpectations): ImageList {
  const now = expected.now ?? new Date();
  if (expected.identifier !== undefined && list.identifier !== expected.identifier) {
    throw new ImageListError(
      'identifier',
      `the list is ${JSON.stringify(list.identifier)}, the subscription expects ${JSON.stringify(expected.identifier)}`,
    );
  }
  if (Date.parse(list.created) > now.getTime()) {
    throw new ImageListError('created', `dc:date:created ${list.created} is in the future`);
  }
  if (!expected.allowExpired && isExpired(list, now))
    throw new ImageListError('expires', `the list expired at ${list.expires}`);
  if (expected.lastAppliedVersion !== undefined && compareVersions(list.version, expected.lastAppliedVersion) < 0) {
    throw new ImageListError(
      'version',
      `hv:version ${list.version} is lower than ${expected.lastAppliedVersion}, applied before`,
    );
  }
  return list;
}

/** The signer of the S/MIME envelope must be the endorser the list names, under the CA it names. */
export function checkSigner(list: ImageList, signer: { subject: string; issuer: string }): void {
  if (signer.subject !== list.endorser.dn) {
    throw new ImageListError('signer', `signed by ${signer.subject}, the list names hv:dn ${list.endorser.dn}`);
  }
  if (signer.issuer !== list.endorser.ca) {
    throw new ImageListError(
      'signer-ca',
      `signer issued by ${signer.issuer}, the list names hv:ca ${list.endorser.ca}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Reconciliation

/** Template attributes that describe an image's content: a change to one means new bytes. */
const CONTENT_KEYS = [TEMPLATE.uri, TEMPLATE.sha512, TEMPLATE.size, TEMPLATE.version] as const;

/**
 * Whose a list's images are: the subscription that registers them and, when its list was
 * verified, the endorser. Another subscription never updates, expires or deletes them, even one
 * whose list reuses the identifier.
 */
export interface ListOwner {
  identifier: string;
  /** Absent only in calls recorded before images had owners: the list identifier alone decided. */
  subscription?: string;
  /** The verified endorser's DN; absent when the subscription skips signature checks. */
  endorserDn?: string;
}

/** The template attributes a registered image carries for the list entry it came from, and its owner. */
export function imageTemplate(owner: ListOwner, image: ListedImage): Record<string, string> {
  const template: Record<string, string> = {
    [TEMPLATE.imageList]: owner.identifier,
    [TEMPLATE.image]: image.identifier,
    [TEMPLATE.uri]: image.uri,
    [TEMPLATE.sha512]: image.sha512,
    [TEMPLATE.size]: String(image.size),
    [TEMPLATE.version]: image.version,
    DESCRIPTION: image.description,
    IMGFLOW_TITLE: image.title,
    IMGFLOW_HYPERVISOR: image.hypervisor,
    IMGFLOW_ARCH: image.arch,
    IMGFLOW_OS: image.os,
    IMGFLOW_OS_VERSION: image.osVersion,
    IMGFLOW_COMMENTS: image.comments,
  };
  if (image.format !== undefined) template.IMGFLOW_FORMAT = image.format;
  if (image.marketplaceUri !== undefined) template.IMGFLOW_MARKETPLACE_URI = image.marketplaceUri;
  if (image.expires !== undefined) template.IMGFLOW_EXPIRES = image.expires;
  if (owner.subscription !== undefined) template[TEMPLATE.subscription] = owner.subscription;
  if (owner.endorserDn !== undefined) template[TEMPLATE.endorser] = owner.endorserDn;
  return template;
}

export interface ImageChange {
  image: ListedImage;
  current: RegistryImage;
  /** The template attributes that differ, for logs and the metadata-only update. */
  changed: string[];
}

export interface ListDiff {
  /** In the list, not in the registry. */
  add: ListedImage[];
  /** New bytes: download, convert, swap. */
  update: ImageChange[];
  /** Same bytes, new description: update the template only. */
  metadata: ImageChange[];
  /** In the registry, gone from the list (or every image, when the list has expired). */
  expire: RegistryImage[];
  unchanged: string[];
  /** In the list, but another image (of another list, or none) holds its name: left alone. */
  taken: TakenName[];
}

export interface TakenName {
  image: ListedImage;
  holderId: number;
  /** The list the holder came from, when it came from one. */
  holderList?: string;
  /** The subscription that registered the holder, when one is recorded. */
  holderSubscription?: string;
}

/**
 * Whether `owner` may change the image: one its subscription registered. An image registered
 * before owners were recorded goes to the first verified subscription of its list that syncs
 * (which records itself on it); a subscription without signature checks claims none.
 */
export function ownedBy(owner: ListOwner, image: RegistryImage): boolean {
  if (image.template[TEMPLATE.imageList] !== owner.identifier) return false;
  if (owner.subscription === undefined) return true;
  const recorded = image.template[TEMPLATE.subscription];
  return recorded ? recorded === owner.subscription : owner.endorserDn !== undefined;
}

/** The image a registry holds for an owner's list entry: named by the identifier, owned by it. */
function currentImages(owner: ListOwner, images: RegistryImage[]): Map<string, RegistryImage> {
  const current = new Map<string, RegistryImage>();
  for (const image of images) {
    const imageId = image.template[TEMPLATE.image];
    if (!ownedBy(owner, image) || !imageId || image.name !== imageId) continue;
    current.set(imageId, image);
  }
  return current;
}

function holderOf(holder: RegistryImage): Omit<TakenName, 'image'> {
  const list = holder.template[TEMPLATE.imageList];
  const subscription = holder.template[TEMPLATE.subscription];
  return {
    holderId: holder.id,
    ...(list ? { holderList: list } : {}),
    ...(subscription ? { holderSubscription: subscription } : {}),
  };
}

/** Template attributes that come from the list (and so may change with it). */
export function isListAttribute(key: string): boolean {
  return key.startsWith('IMGFLOW_') || key === 'DESCRIPTION';
}

/** An attribute blanked by a metadata update counts as absent. */
function changedKeys(wanted: Record<string, string>, have: Record<string, string>): string[] {
  const keys = new Set([...Object.keys(wanted), ...Object.keys(have).filter(isListAttribute)]);
  return [...keys].filter((key) => (wanted[key] ?? '') !== (have[key] ?? '')).sort();
}

/**
 * What to do to make the registry match the list, given every image the registry holds. Images
 * already renamed `_EXPIRED_` are history and take no part. An expired list expires every image it
 * brought. A new image whose name another image holds is reported, never registered beside it.
 */
export function diffList(
  list: ImageList,
  registered: RegistryImage[],
  now = new Date(),
  owner: ListOwner = { identifier: list.identifier },
): ListDiff {
  const current = currentImages(owner, registered);
  const diff: ListDiff = { add: [], update: [], metadata: [], expire: [], unchanged: [], taken: [] };
  if (isExpired(list, now)) {
    diff.expire = [...current.values()];
    return diff;
  }
  const listed = new Set<string>();
  // An image past its own expiry counts as gone from the list.
  for (const image of list.images.filter((i) => !isExpired(i, now))) {
    listed.add(image.identifier);
    const have = current.get(image.identifier);
    if (!have) {
      const holder = registered.find((other) => other.name === image.identifier);
      if (holder) diff.taken.push({ image, ...holderOf(holder) });
      else diff.add.push(image);
      continue;
    }
    const changed = changedKeys(imageTemplate(owner, image), have.template);
    if (changed.length === 0) diff.unchanged.push(image.identifier);
    else if (changed.some((key) => (CONTENT_KEYS as readonly string[]).includes(key)))
      diff.update.push({ image, current: have, changed });
    else diff.metadata.push({ image, current: have, changed });
  }
  diff.expire = [...current.values()].filter((image) => !listed.has(image.template[TEMPLATE.image]!));
  return diff;
}
