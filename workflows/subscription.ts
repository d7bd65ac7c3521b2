/**
 * Image-list subscriptions. One entity workflow per subscription keeps its settings (never a
 * secret), the list version last applied, each image's state and a history; it changes through
 * validated Updates and signals, and runs each sync as a child workflow, one at a time. A Temporal
 * Schedule (overlap SKIP) starts a tick workflow that only asks the entity for a sync.
 *
 * A sync fetches and verifies the list on `control`, compares it with the registry on
 * `cloud.<site>`, downloads only what changed and swaps each changed image as a saga: every step
 * done is undone in reverse when a later one fails, so the old image is back under its name with
 * its access and no half-registered successor is left.
 */
import {
  ApplicationFailure,
  allHandlersFinished,
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  executeChild,
  getExternalWorkflowHandle,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { CloudActivities, ImageSnapshot } from '../activities/cloud/index.js';
import type { ImageChange, ListDiff, ListedImage, ListOwner, TakenName } from '../activities/cloud/imagelist.js';
import type { RegistryImage } from '../activities/cloud/registry/types.js';
import { clip } from '../common/limits.js';
import { checkUser, checkReason, type HistoryEntry } from '../common/lineage.js';
import { checkHost, checkName, InputError } from '../common/names.js';
import { checkOciSource, isOciUrl, type OciSourceSettings } from '../common/oci.js';
import { CONTROL_QUEUE, queues } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';

// ---------------------------------------------------------------------------------------------
// Settings and their checks (pure; the CLI checks with the same functions)

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
  const attributes = typeof value === 'string' && value.startsWith('/') ? value.slice(1).split(/\/(?=[A-Za-z][A-Za-z0-9.]*=)/) : [];
  // Blanks around a DN can never match the name openssl prints for a signer.
  if (typeof value !== 'string' || value.length > 512 || value !== value.trim() || !attributes.every((a) => DN_ATTRIBUTE.test(a)) || !attributes.length) {
    throw new InputError(field, 'a distinguished name in slash form without blanks around it, such as /C=CH/O=Org/CN=Name', value);
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
    throw new InputError(field, "a URL without credentials (put user:token in a file and give it as --credentials-file)", value.replace(CREDENTIALS, '$1<credentials>@'));
  }
  const m = typeof value === 'string' && value.length <= 2048 ? LIST_URL.exec(value) : null;
  const port = m?.[2] === undefined ? 80 : Number(m[2]);
  if (!m || port < 1 || port > 65535) throw new InputError(field, 'an http(s) URL without credentials: a host name or [IPv6] address, a port from 1 to 65535', value);
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
  if (typeof value !== 'string' || !value.startsWith('/') || value.split('/').includes('..') || /[\0\n]/.test(value) || value.length > 1024) {
    throw new InputError(field, 'an absolute path without ".."', value);
  }
  return value;
}

/** The list identifier: what a HEPiX list puts in dc:identifier (often a UUID). */
export function checkListIdentifier(field: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(value)) throw new InputError(field, 'a list identifier of letters, digits, ".", "_", ":" or "-"', value);
  return value;
}

export function checkSubscriptionConfig(config: SubscriptionConfig): SubscriptionConfig {
  if (typeof config !== 'object' || config === null) throw new InputError('subscription', 'the subscription settings', config);
  checkName('subscription', config.name);
  if (isOciUrl(config.url)) checkOciSource(config.url, config.oci, config.insecure === true);
  else checkListUrl('url', config.url);
  if (config.identifier !== undefined) checkListIdentifier('identifier', config.identifier);
  checkDn('endorser-dn', config.endorser?.dn);
  checkDn('endorser-ca', config.endorser?.ca);
  if (config.caDir !== undefined) checkAbsolutePath('ca-dir', config.caDir);
  if (config.insecure !== undefined && typeof config.insecure !== 'boolean') throw new InputError('insecure', 'true or false', config.insecure);
  checkEvery('every', config.every);
  oneOf('new-images', NEW_IMAGE_POLICIES, config.newImages);
  oneOf('registry', REGISTRY_KINDS, config.registry);
  if (config.username !== undefined && (typeof config.username !== 'string' || !USERNAME.test(config.username))) throw new InputError('username', 'a user name of letters, digits, ".", "_", "@" or "-"', config.username);
  if (config.passwordFile !== undefined) checkAbsolutePath('password-file', config.passwordFile);
  if (config.credentialsFile !== undefined) checkAbsolutePath('credentials-file', config.credentialsFile);
  oneOf('format', DISK_FORMATS, config.format);
  if (typeof config.stage !== 'boolean') throw new InputError('stage', 'true or false', config.stage);
  checkHost('site', config.site);
  return config;
}

export const subscriptionWorkflowId = (name: string) => `subscription-${checkName('subscription', name)}`;
export const subscriptionScheduleId = subscriptionWorkflowId;

/** `<id>_EXPIRED_<YYYY-mm-dd_HH-MM-SS>_UTC`, from workflow time: names sort by time across sites. */
export function parkedName(identifier: string, when: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getUTCFullYear()}-${p(when.getUTCMonth() + 1)}-${p(when.getUTCDate())}_${p(when.getUTCHours())}-${p(when.getUTCMinutes())}-${p(when.getUTCSeconds())}`;
  return `${identifier}_EXPIRED_${stamp}_UTC`;
}

/** Renames an image to its parked name, or that name with a counter when another image holds it; returns the name given. */
async function park(act: Proxies, id: number, name: string): Promise<string> {
  // Syncs recorded before renames answered with the name had no collisions to report.
  return (await act.registry.renameImage({ id, name, free: true })) ?? name;
}

/**
 * `<id>+STAGED`: where a staged sync registers an image for the site to try before `adopt`. "+" is
 * allowed in registry names but never in list identifiers, so no listed image, and no
 * `_EXPIRED_` name, can ever be called this.
 */
export function stagedName(identifier: string): string {
  return `${identifier}+STAGED`;
}

// ---------------------------------------------------------------------------------------------
// The sync run

export type ImageAction = 'add' | 'update' | 'metadata' | 'expire' | 'offer' | 'refuse' | 'delete' | 'stage' | 'unstage';

export interface ImageOutcome {
  identifier: string;
  action: ImageAction;
  ok: boolean;
  title?: string;
  imageVersion?: string;
  registryId?: number;
  registryName?: string;
  /** Why it failed, or what was left for later (an image still in use). */
  note?: string;
}

/** An expired image waiting until nothing uses it, to be deleted. */
export interface ParkedImage {
  id: number;
  name: string;
  identifier: string;
}

/** An image a staged sync registered under `<id>+STAGED`, private to the admin, for `adopt`. */
export interface StagedImage {
  identifier: string;
  imageVersion: string;
  sha512: string;
  registryId: number;
  registryName: string;
}

export interface PlanReport {
  add: string[];
  update: string[];
  metadata: string[];
  expire: { identifier: string; from: string }[];
  unchanged: string[];
  /** New images the policy keeps out (subscribe: until adopted; refuse: for good). */
  offered: string[];
  refused: string[];
  /** New images whose name another image holds (absent from reports made before it existed). */
  taken?: string[];
}

export interface SyncInput {
  subscription: SubscriptionConfig;
  lastAppliedVersion?: string;
  /**
   * dry-run: verify, stage each new or changed image under `<id>+STAGED` and report;
   * discard-staged: remove the staged images of `stagedList` (unsubscribe, refused list).
   */
  mode: 'apply' | 'dry-run' | 'discard-staged';
  /** Adopting a staged report: the list must still be this version. */
  expectVersion?: string;
  /** Offered images the site takes now. */
  adoptOffered?: boolean;
  /** Adopting: swap in the staged images instead of registering anew. */
  useStaged?: boolean;
  /** The list whose staged images `discard-staged` removes. */
  stagedList?: string;
  parked: ParkedImage[];
}

export interface SyncResult {
  listIdentifier: string;
  listVersion: string;
  verified: boolean;
  applied: boolean;
  /** The list had expired: its images were expired and nothing else was applied. */
  expired?: string;
  report: PlanReport;
  outcomes: ImageOutcome[];
  /** Expired images still in use; a later sync tries again. */
  parked: ParkedImage[];
  /** Images left under `<id>+STAGED` at the end of the run. */
  staged?: StagedImage[];
}

/** Failures no retry can mend: a refused list, a bad name, a download that did not match. */
const NON_RETRYABLE = ['ImageListError', 'InputError', 'DownloadError', 'ConvertError'];

function cloudProxies(input: SyncInput) {
  const wait = `${input.subscription.workerWaitSeconds ?? 120}s`;
  const base = (overrides: ActivityOptions): ActivityOptions => ({
    scheduleToStartTimeout: wait,
    // Short enough that a step lost with its worker is retried soon on another.
    startToCloseTimeout: '90s',
    ...overrides,
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE, ...overrides.retry },
  });
  const taskQueue = queues.cloud(input.subscription.site);
  return {
    control: proxyActivities<CloudActivities>(base({ taskQueue: CONTROL_QUEUE, startToCloseTimeout: '5m', retry: { maximumAttempts: 3 } })),
    registry: proxyActivities<CloudActivities>(base({ taskQueue })),
    /** Undo steps: more patience, since giving up leaves the registry half changed. */
    undo: proxyActivities<CloudActivities>(base({ taskQueue, retry: { maximumAttempts: 20 } })),
    /** Tried once per sync; a refusal (image in use) waits for the next sync. */
    once: proxyActivities<CloudActivities>(base({ taskQueue, retry: { maximumAttempts: 1 } })),
    download: withCredentials(input.subscription, proxyActivities<CloudActivities>(base({ taskQueue, startToCloseTimeout: '2h', heartbeatTimeout: '60s', retry: { maximumAttempts: 3 } }))),
    convert: proxyActivities<CloudActivities>(base({ taskQueue, startToCloseTimeout: '1h', retry: { maximumAttempts: 2 } })),
    ready: proxyActivities<CloudActivities>(base({ taskQueue, startToCloseTimeout: '20m', retry: { maximumAttempts: 2 } })),
  };
}

type Proxies = ReturnType<typeof cloudProxies>;

/** Image downloads carry where the subscription's credentials are (the worker sends them to the list's host only). */
function withCredentials(sub: SubscriptionConfig, download: CloudActivities) {
  const credentials = { ...(sub.credentialsFile === undefined ? {} : { credentials: { file: sub.credentialsFile, listUrl: sub.url } }), ...(sub.oci ? { oci: sub.oci } : {}) };
  return { downloadImage: (input: { image: ListedImage }) => download.downloadImage({ ...input, ...credentials }) };
}

function message(error: unknown): string {
  const err = error as Error & { cause?: Error & { cause?: Error } };
  // Activity failures wrap the activity's own error; its message names the check.
  return (err.cause?.cause?.message ?? err.cause?.message ?? err.message ?? String(error)).split('\n')[0]!;
}

function planReport(diff: ListDiff, policy: NewImagePolicy, adoptOffered: boolean): PlanReport {
  const admitted = policy === 'accept' || (policy === 'subscribe' && adoptOffered);
  return {
    add: admitted ? diff.add.map((i) => i.identifier) : [],
    update: diff.update.map((c) => c.image.identifier),
    metadata: diff.metadata.map((c) => c.image.identifier),
    expire: diff.expire.map((i) => ({ identifier: i.template.IMGFLOW_IMAGE ?? i.name, from: i.name })),
    unchanged: diff.unchanged,
    offered: policy === 'subscribe' && !adoptOffered ? diff.add.map((i) => i.identifier) : [],
    refused: policy === 'refuse' ? diff.add.map((i) => i.identifier) : [],
    taken: takenNames(diff).map((t) => t.image.identifier),
  };
}

/** Plans made before names were checked have none. */
function takenNames(diff: ListDiff): TakenName[] {
  return diff.taken ?? [];
}

/** A listed image whose name another image holds: reported, never registered beside it. */
function takenOutcome({ image, holderId, holderList, holderSubscription }: TakenName, owner: ListOwner): ImageOutcome {
  const holder = holderSubscription
    ? `image ${holderId} of subscription ${holderSubscription} (list ${holderList ?? '?'}), which subscription ${owner.subscription} never changes`
    : holderList
      ? `image ${holderId} of list ${holderList}`
      : `image ${holderId}, which no list brought`;
  return { identifier: image.identifier, action: 'add', ok: false, title: image.title, imageVersion: image.version, note: `not added: the name ${image.identifier} is taken by ${holder}` };
}

/**
 * Downloads (or finds in the cache) and converts one listed image; returns the disk to register,
 * and a note when the list declared another format than the file has.
 */
async function prepareDisk(act: Proxies, image: ListedImage, format: SubscriptionConfig['format']): Promise<{ disk: string; note?: string }> {
  setCurrentDetails(`**downloading** ${image.identifier} ${image.version}`);
  const downloaded = await act.download.downloadImage({ image });
  setCurrentDetails(`**converting** ${image.identifier} ${image.version}`);
  const converted = await act.convert.convertForRegistry({ sha512: downloaded.sha512, path: downloaded.path, ...(image.format ? { declared: image.format } : {}) });
  // The worker's registry decides the format; a subscription that expects another one is misconfigured.
  if (converted.format !== format) throw ApplicationFailure.nonRetryable(`format: the registry takes ${converted.format}, the subscription asks for ${format}`, 'InputError');
  return { disk: converted.path, ...(converted.formatNote ? { note: converted.formatNote } : {}) };
}

/** Notes joined for an outcome; none when there are none. */
function notes(...parts: (string | undefined)[]): { note?: string } {
  const note = parts.filter(Boolean).join('; ');
  return note ? { note } : {};
}

/** Removes whatever registration was made (or half made) for this entry, under `name` when staged. */
async function removeRegistered(act: Proxies, owner: ListOwner, image: ListedImage, name?: string): Promise<void> {
  const id = await act.undo.findRegisteredImage({ list: owner, image, ...(name !== undefined ? { name } : {}) });
  if (id !== null) await act.undo.deleteImage({ id });
}

/** Puts a staged image that an adoption had taken back under its staged name, private to the admin. */
async function restage(act: Proxies, id: number, identifier: string): Promise<void> {
  await act.undo.renameImage({ id, name: stagedName(identifier) });
  await act.undo.lockImage({ id });
  await act.undo.setImageEnabled({ id, enabled: true });
}

const READY_TIMEOUT_MS = 15 * 60_000;

/** Runs undo steps newest first, out of reach of cancellation: a cancelled sync still cleans up. */
async function compensate(undo: (() => Promise<void>)[]): Promise<string | undefined> {
  return CancellationScope.nonCancellable(async () => {
    for (const step of [...undo].reverse()) {
      try {
        await step();
      } catch (error) {
        return `undo failed, needs a person: ${message(error)}`;
      }
    }
    return undefined;
  });
}

/**
 * A first-ever image: registered (or its staged copy renamed), ready, and private to the admin
 * until the site opens it.
 */
async function addImage(act: Proxies, owner: ListOwner, image: ListedImage, format: SubscriptionConfig['format'], staged?: RegistryImage): Promise<ImageOutcome> {
  const outcome = { identifier: image.identifier, action: 'add' as const, title: image.title, imageVersion: image.version };
  const undo = [staged ? () => restage(act, staged.id, image.identifier) : () => removeRegistered(act, owner, image)];
  try {
    let id: number;
    let formatNote: string | undefined;
    if (staged) {
      setCurrentDetails(`**adopting** ${image.identifier}: staged image ${staged.id}`);
      await act.registry.renameImage({ id: staged.id, name: image.identifier });
      id = staged.id;
    } else {
      const { disk, note } = await prepareDisk(act, image, format);
      formatNote = note;
      setCurrentDetails(`**registering** ${image.identifier}`);
      id = await act.registry.registerImage({ list: owner, image, path: disk });
    }
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.lockImage({ id });
    return { ...outcome, ok: true, registryId: id, registryName: image.identifier, ...notes(staged && `adopted staged image ${staged.id}`, formatNote) };
  } catch (error) {
    const undone = await compensate(undo);
    return { ...outcome, ok: false, note: undone ?? message(error) };
  }
}

/**
 * The swap: remember the old image's access, lock, disable, park it under its `_EXPIRED_` name,
 * register the new one under the identifier (or rename its staged copy to it), wait until ready,
 * give it the old access. Each step adds its undo before it runs, since a step may take effect and
 * still report failure. Nothing is touched before the new disk is verified.
 */
async function swapImage(
  act: Proxies,
  owner: ListOwner,
  change: ImageChange,
  action: 'update' | 'metadata',
  when: Date,
  format: SubscriptionConfig['format'],
  staged?: RegistryImage,
): Promise<ImageOutcome> {
  const { image, current: old } = change;
  const outcome = { identifier: image.identifier, action, title: image.title, imageVersion: image.version };
  let disk: string | undefined;
  let formatNote: string | undefined;
  try {
    if (!staged) ({ disk, note: formatNote } = await prepareDisk(act, image, format));
  } catch (error) {
    return { ...outcome, ok: false, registryId: old.id, registryName: old.name, note: message(error) };
  }
  let snapshot: ImageSnapshot;
  try {
    snapshot = await act.registry.snapshotImage({ id: old.id });
  } catch (error) {
    return { ...outcome, ok: false, registryId: old.id, registryName: old.name, note: message(error) };
  }
  const undo: (() => Promise<void>)[] = [() => act.undo.applySnapshot({ id: old.id, snapshot, name: snapshot.name })];
  let parked = parkedName(image.identifier, when);
  try {
    setCurrentDetails(`**swapping** ${image.identifier}: parking image ${old.id} as ${parked}`);
    await act.registry.lockImage({ id: old.id });
    await act.registry.setImageEnabled({ id: old.id, enabled: false });
    parked = await park(act, old.id, parked);
    let id: number;
    if (staged) {
      undo.push(() => restage(act, staged.id, image.identifier));
      setCurrentDetails(`**swapping** ${image.identifier}: adopting staged image ${staged.id}`);
      await act.registry.renameImage({ id: staged.id, name: image.identifier });
      id = staged.id;
    } else {
      undo.push(() => removeRegistered(act, owner, image));
      setCurrentDetails(`**swapping** ${image.identifier}: registering ${image.version}`);
      id = await act.registry.registerImage({ list: owner, image, path: disk! });
    }
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.applySnapshot({ id, snapshot });
    return { ...outcome, ok: true, registryId: id, registryName: image.identifier, ...notes(`replaced image ${old.id}, parked as ${parked}`, staged && `adopted staged image ${staged.id}`, formatNote) };
  } catch (error) {
    setCurrentDetails(`**undoing** the swap of ${image.identifier}: ${message(error)}`);
    const undone = await compensate(undo);
    return { ...outcome, ok: false, registryId: old.id, registryName: old.name, note: undone ?? `${message(error)}; image ${old.id} restored` };
  }
}

/**
 * Only the list's metadata changed: it is attached to the registered image in place. No download,
 * no rename, no new image; owner, group, permissions and state stay as the site set them.
 */
async function updateMetadata(act: Proxies, owner: ListOwner, change: ImageChange): Promise<ImageOutcome> {
  const { image, current } = change;
  const outcome = { identifier: image.identifier, action: 'metadata' as const, title: image.title, imageVersion: image.version, registryId: current.id, registryName: current.name };
  try {
    setCurrentDetails(`**updating metadata** of ${image.identifier}: ${change.changed.join(', ')}`);
    await act.registry.updateImageMetadata({ id: current.id, list: owner, image });
    return { ...outcome, ok: true, note: `metadata updated in place: ${change.changed.join(', ')}` };
  } catch (error) {
    return { ...outcome, ok: false, note: message(error) };
  }
}

/** Images under their `<id>+STAGED` name. */
function stagedImagesOf(images: RegistryImage[]): RegistryImage[] {
  return images.filter((image) => image.template.IMGFLOW_IMAGE !== undefined && image.name === stagedName(image.template.IMGFLOW_IMAGE));
}

function stagedCopyOf(staged: RegistryImage[], image: ListedImage): RegistryImage | undefined {
  return staged.find((s) => s.template.IMGFLOW_IMAGE === image.identifier && s.template.IMGFLOW_SHA512 === image.sha512 && s.state !== 'ERROR');
}

function stagedRecord(image: ListedImage, id: number): StagedImage {
  return { identifier: image.identifier, imageVersion: image.version, sha512: image.sha512, registryId: id, registryName: stagedName(image.identifier) };
}

/** Stages one new or changed image: verified, registered as `<id>+STAGED`, ready, private to the admin; or nothing. */
async function stageImage(act: Proxies, owner: ListOwner, image: ListedImage, format: SubscriptionConfig['format']): Promise<{ outcome: ImageOutcome; staged?: StagedImage }> {
  const name = stagedName(image.identifier);
  const outcome = { identifier: image.identifier, action: 'stage' as const, title: image.title, imageVersion: image.version };
  try {
    const { disk, note } = await prepareDisk(act, image, format);
    setCurrentDetails(`**staging** ${image.identifier} ${image.version} as ${name}`);
    const id = await act.registry.registerImage({ list: owner, image, path: disk, name });
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.lockImage({ id });
    return { outcome: { ...outcome, ok: true, registryId: id, registryName: name, ...notes(note) }, staged: stagedRecord(image, id) };
  } catch (error) {
    const undone = await compensate([() => removeRegistered(act, owner, image, name)]);
    return { outcome: { ...outcome, ok: false, note: undone ?? message(error) } };
  }
}

/** Removes a staged image; one a VM still uses is parked under its own `_EXPIRED_` name and deleted once unused. */
async function discardStaged(act: Proxies, image: RegistryImage, when: Date): Promise<{ outcome: ImageOutcome; parked?: ParkedImage }> {
  const identifier = image.template.IMGFLOW_IMAGE ?? image.name;
  const outcome = { identifier, action: 'unstage' as const, registryId: image.id, imageVersion: image.template.IMGFLOW_VERSION };
  if (await tryDelete(act, { id: image.id, name: image.name, identifier })) return { outcome: { ...outcome, ok: true, registryName: image.name, note: 'deleted' } };
  try {
    const name = await park(act, image.id, parkedName(image.name, when));
    await act.registry.lockImage({ id: image.id });
    return { outcome: { ...outcome, ok: true, registryName: name, note: `in use: parked as ${name}, deleted once unused` }, parked: { id: image.id, name, identifier } };
  } catch (error) {
    return { outcome: { ...outcome, ok: false, registryName: image.name, note: message(error) } };
  }
}

interface StagingResult {
  outcomes: ImageOutcome[];
  staged: StagedImage[];
  parked: ParkedImage[];
}

/** Discards staged images, collecting what they leave parked. */
async function discardAll(act: Proxies, images: RegistryImage[], when: Date, into: StagingResult): Promise<void> {
  for (const image of images) {
    const discarded = await discardStaged(act, image, when);
    into.outcomes.push(discarded.outcome);
    if (discarded.parked) into.parked.push(discarded.parked);
  }
}

/**
 * A staged sync: every new (admitted) or changed image lands as `<id>+STAGED` for the site to try.
 * What an older list staged and this one no longer wants goes first, so a newer list replaces it;
 * an image already staged with the same bytes is kept as it is.
 */
async function stageAll(act: Proxies, owner: ListOwner, diff: ListDiff, report: PlanReport, format: SubscriptionConfig['format'], when: Date): Promise<StagingResult> {
  const wanted = [...diff.add.filter((image) => report.add.includes(image.identifier)), ...diff.update.map((change) => change.image)];
  const existing = stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: owner.identifier, owner }));
  const result: StagingResult = { outcomes: [], staged: [], parked: [] };
  await discardAll(act, existing.filter((image) => !wanted.some((w) => stagedCopyOf([image], w))), when, result);
  for (const image of wanted) {
    const kept = stagedCopyOf(existing, image);
    if (kept) {
      result.outcomes.push({ identifier: image.identifier, action: 'stage', ok: true, title: image.title, imageVersion: image.version, registryId: kept.id, registryName: kept.name, note: 'already staged' });
      result.staged.push(stagedRecord(image, kept.id));
      continue;
    }
    const staged = await stageImage(act, owner, image, format);
    result.outcomes.push(staged.outcome);
    if (staged.staged) result.staged.push(staged.staged);
  }
  return result;
}

/** Tries once to delete a parked image; one still in use stays parked for the next sync. */
async function tryDelete(act: Proxies, image: ParkedImage): Promise<boolean> {
  try {
    await act.once.deleteImage({ id: image.id });
    return true;
  } catch {
    return false;
  }
}

/** Expire: park under the `_EXPIRED_` name, lock, disable (an image in use cannot be), then delete once unused. */
async function expireImage(act: Proxies, old: RegistryImage, when: Date): Promise<{ outcome: ImageOutcome; parked?: ParkedImage }> {
  const identifier = old.template.IMGFLOW_IMAGE ?? old.name;
  try {
    const name = await park(act, old.id, parkedName(identifier, when));
    await act.registry.lockImage({ id: old.id });
    const disabled = await act.once.setImageEnabled({ id: old.id, enabled: false }).then(
      () => true,
      () => false,
    );
    const parked = { id: old.id, name, identifier };
    if (await tryDelete(act, parked)) return { outcome: { identifier, action: 'expire', ok: true, registryId: old.id, registryName: name, note: 'deleted' } };
    const note = `parked as ${name}${disabled ? '' : ', left enabled (in use)'}; deleted once unused`;
    return { outcome: { identifier, action: 'expire', ok: true, registryId: old.id, registryName: name, note }, parked };
  } catch (error) {
    return { outcome: { identifier, action: 'expire', ok: false, registryId: old.id, registryName: old.name, note: message(error) } };
  }
}

async function fetchVerified(act: Proxies, input: SyncInput) {
  const sub = input.subscription;
  setCurrentDetails(`**verifying** the list at ${sub.url}`);
  return act.control.fetchImageList({
    subscription: sub.name,
    url: sub.url,
    ...(sub.identifier !== undefined ? { expectedIdentifier: sub.identifier } : {}),
    ...(input.lastAppliedVersion !== undefined ? { lastAppliedVersion: input.lastAppliedVersion } : {}),
    endorser: sub.endorser,
    ...(sub.caDir !== undefined ? { caDir: sub.caDir } : {}),
    insecure: sub.insecure === true,
    ...(sub.credentialsFile !== undefined ? { credentialsFile: sub.credentialsFile } : {}),
    ...(sub.oci ? { oci: sub.oci } : {}),
    // An expired list is fetched only to expire what it brought; the sync applies nothing else of it.
    allowExpired: true,
  });
}

/** The subscription as the owner of the images it registers (its endorser only when the list was verified). */
function ownerOf(sub: SubscriptionConfig, identifier: string, verified: boolean): ListOwner {
  return { identifier, subscription: sub.name, ...(verified ? { endorserDn: sub.endorser.dn } : {}) };
}

const emptyReport = (): PlanReport => ({ add: [], update: [], metadata: [], expire: [], unchanged: [], offered: [], refused: [] });

/** Removes every staged image of a list: on unsubscribe, or when a list was refused. */
async function discardStagedRun(act: Proxies, input: SyncInput): Promise<SyncResult> {
  let listIdentifier: string;
  try {
    listIdentifier = checkListIdentifier('stagedList', input.stagedList);
  } catch (error) {
    throw ApplicationFailure.nonRetryable((error as Error).message, 'InputError');
  }
  setCurrentDetails(`**discarding** the staged images of list ${listIdentifier}`);
  const result: StagingResult = { outcomes: [], staged: [], parked: [] };
  const owner = ownerOf(input.subscription, listIdentifier, input.subscription.insecure !== true);
  await discardAll(act, stagedImagesOf(await act.registry.listImagesOf({ listIdentifier, owner })), new Date(), result);
  return { listIdentifier, listVersion: '', verified: false, applied: false, report: emptyReport(), outcomes: result.outcomes, parked: [...input.parked, ...result.parked], staged: [] };
}

/** One sync of one subscription: verify, reconcile, then apply (or stage, in a dry run). */
export async function subscriptionSyncWorkflow(input: SyncInput): Promise<SyncResult> {
  const act = cloudProxies(input);
  const sub = input.subscription;
  if (input.mode === 'discard-staged') return discardStagedRun(act, input);
  let verified;
  try {
    verified = await fetchVerified(act, input);
  } catch (error) {
    throw ApplicationFailure.nonRetryable(`list not applied: ${message(error)}`, 'ListRefused');
  }
  const { list } = verified;
  if (input.expectVersion !== undefined && list.version !== input.expectVersion) {
    throw ApplicationFailure.nonRetryable(`list not applied: image list check "staged-version" failed: the list is now version ${list.version}, ${input.expectVersion} was staged; sync to stage it again`, 'ListRefused');
  }
  const when = new Date(); // workflow time: replays give the same names
  const expired = Date.parse(list.expires) <= when.getTime() ? `image list check "expires" failed: the list expired at ${list.expires}` : undefined;
  const owner = ownerOf(sub, list.identifier, verified.verified);
  const planned = await act.registry.planListUpdate({ list, owner });
  const diff: ListDiff = expired ? { add: [], update: [], metadata: [], expire: planned.expire, unchanged: [], taken: [] } : planned;
  const report = planReport(diff, sub.newImages, input.adoptOffered === true);
  const result: SyncResult = { listIdentifier: list.identifier, listVersion: list.version, verified: verified.verified, applied: false, report, outcomes: [], parked: input.parked, ...(expired ? { expired } : {}) };
  if (input.mode === 'dry-run') {
    if (!patched('stage-images')) return result;
    const staging = await stageAll(act, owner, diff, report, sub.format, when);
    const failed = staging.outcomes.filter((o) => !o.ok).length;
    setCurrentDetails(`**staged** list ${list.identifier} version ${list.version}: ${staging.staged.length} images staged${failed ? `, ${failed} failed` : ''}`);
    return { ...result, outcomes: [...takenNames(diff).map((taken) => takenOutcome(taken, owner)), ...staging.outcomes], staged: staging.staged, parked: [...input.parked, ...staging.parked] };
  }

  // Adopting: the images staged for this list's bytes are swapped in instead of registered anew.
  const staged = input.useStaged ? stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: list.identifier, owner })) : [];
  const outcomes: ImageOutcome[] = takenNames(diff).map((taken) => takenOutcome(taken, owner));
  for (const image of diff.add) {
    if (report.add.includes(image.identifier)) outcomes.push(await addImage(act, owner, image, sub.format, stagedCopyOf(staged, image)));
    else outcomes.push({ identifier: image.identifier, action: sub.newImages === 'refuse' ? 'refuse' : 'offer', ok: true, title: image.title, imageVersion: image.version });
  }
  for (const change of diff.update) outcomes.push(await swapImage(act, owner, change, 'update', when, sub.format, stagedCopyOf(staged, change.image)));
  const inPlace = patched('metadata-in-place');
  for (const change of diff.metadata) outcomes.push(inPlace ? await updateMetadata(act, owner, change) : await swapImage(act, owner, change, 'metadata', when, sub.format));
  const parked: ParkedImage[] = [];
  for (const old of diff.expire) {
    const expired = await expireImage(act, old, when);
    outcomes.push(expired.outcome);
    if (expired.parked) parked.push(expired.parked);
  }
  for (const image of input.parked) {
    if (await tryDelete(act, image)) outcomes.push({ identifier: image.identifier, action: 'delete', ok: true, registryId: image.id, registryName: image.name });
    else parked.push(image);
  }
  const left: StagedImage[] = [];
  if (input.useStaged) {
    // Staged images a failed swap put back stay for the next adopt; any other is no longer wanted.
    const retry = new Set(outcomes.filter((o) => !o.ok).map((o) => o.identifier));
    const leftovers = stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: list.identifier, owner }));
    const keptFor = (image: RegistryImage) => list.images.find((listed) => retry.has(listed.identifier) && stagedCopyOf([image], listed));
    await discardAll(act, leftovers.filter((image) => !keptFor(image)), when, { outcomes, staged: [], parked });
    for (const image of leftovers) {
      const listed = keptFor(image);
      if (listed) left.push(stagedRecord(listed, image.id));
    }
  }
  setCurrentDetails(`**done** list ${list.identifier} version ${list.version}: ${outcomes.filter((o) => !o.ok).length} failed of ${outcomes.length} changes`);
  return { ...result, applied: true, outcomes, parked, ...(input.useStaged ? { staged: left } : {}) };
}

/** Started by the subscription's Schedule: asks the entity for a sync, skipped if one is running. */
export async function subscriptionTickWorkflow(input: { subscription: string }): Promise<void> {
  await getExternalWorkflowHandle(subscriptionWorkflowId(input.subscription)).signal(syncRequestSignal, { by: 'schedule', reason: 'scheduled', skipIfBusy: true });
}

// ---------------------------------------------------------------------------------------------
// The entity

export type ApplianceState = 'registered' | 'updated' | 'expired' | 'deleted' | 'offered' | 'refused' | 'failed';

export interface Appliance {
  subscription: string;
  identifier: string;
  title?: string;
  imageVersion?: string;
  listVersion: string;
  state: ApplianceState;
  registryName?: string;
  registryId?: number;
  lastChange: string;
  note?: string;
}

/** Whether the registry holds the appliance under its identifier now (a failed swap leaves the old image there). */
function inRegistry(a: Appliance): boolean {
  return a.registryId !== undefined && a.registryName === a.identifier && (a.state === 'registered' || a.state === 'updated' || a.state === 'failed');
}

export type SyncStatus = 'applied' | 'partial' | 'expired' | 'staged' | 'refused' | 'failed' | 'skipped';

export interface SyncOutcome {
  run: number;
  at: string;
  by: string;
  status: SyncStatus;
  listVersion?: string;
  reason?: string;
  report?: PlanReport;
  outcomes?: ImageOutcome[];
}

export interface StagedReport {
  listVersion: string;
  /** The list the staged images belong to (a staged subscription may not have applied one yet). */
  listIdentifier?: string;
  at: string;
  report: PlanReport;
  /** The images waiting under `<id>+STAGED` for `adopt`. */
  images?: StagedImage[];
}

export interface SubscriptionState {
  config: SubscriptionConfig;
  lastAppliedVersion?: string;
  images: Record<string, Appliance>;
  parked: ParkedImage[];
  staged?: StagedReport;
  lastSync?: SyncOutcome;
  history: HistoryEntry[];
  seq: number;
  runs: number;
}

export interface SubscriptionInput {
  config: SubscriptionConfig;
  state?: SubscriptionState;
  maxHistoryEvents?: number;
}

export interface SubscriptionView {
  config: SubscriptionConfig;
  lastAppliedVersion?: string;
  staged?: StagedReport;
  lastSync?: SyncOutcome;
  syncing: boolean;
  /** Appliances the registry holds under their identifiers now. */
  images: number;
  parked: ParkedImage[];
  historyEntries: number;
}

interface SyncRequest {
  by: string;
  reason: string;
  skipIfBusy?: boolean;
}

export const syncUpdate = defineUpdate<SyncOutcome, [{ by: string }]>('sync');
export const adoptUpdate = defineUpdate<SyncOutcome, [{ by: string }]>('adopt');
export const unsubscribeUpdate = defineUpdate<SubscriptionView, [{ by: string; reason?: string }]>('unsubscribe');
/** From the schedule and from vmcatcher events: fire and forget; bad ones are recorded and dropped. */
export const syncRequestSignal = defineSignal<[SyncRequest]>('syncRequest');
export const describeQuery = defineQuery<SubscriptionView>('describe');
export const appliancesQuery = defineQuery<Appliance[]>('appliances');
export const historyQuery = defineQuery<HistoryEntry[], [{ last?: number }]>('history');

/** Staging outcomes leave the site's appliances as they are. */
const APPLIED_STATE: Record<Exclude<ImageAction, 'stage' | 'unstage'>, ApplianceState> = {
  add: 'registered',
  update: 'updated',
  metadata: 'updated',
  expire: 'expired',
  delete: 'deleted',
  offer: 'offered',
  refuse: 'refused',
};

/** History entries a subscription keeps (about four syncs a day for most of a year). */
const HISTORY_KEEP = 1000;

/** The rules of a subscription as plain code over its state; the workflow wires them to messages. */
export class Subscription {
  constructor(readonly state: SubscriptionState) {}

  /** Details may quote a failure: clipped; only the newest entries stay, so the state it carries stays bounded. */
  record(by: string, op: string, detail: string, at: string): void {
    this.state.history.push({ seq: ++this.state.seq, at, by, op, detail: clip(detail) });
    if (this.state.history.length > HISTORY_KEEP) this.state.history.splice(0, this.state.history.length - HISTORY_KEEP);
  }

  validateAdopt(input: { by: string }): void {
    checkUser('by', input?.by);
    const offered = Object.values(this.state.images).some((i) => i.state === 'offered');
    if (!this.state.staged && !offered) throw new InputError('subscription', `a staged report or offered images to adopt (${this.state.config.name} has none: run sync first)`, this.state.config.name);
  }

  syncInput(mode: 'apply' | 'dry-run', adopting: boolean): SyncInput {
    const { config, lastAppliedVersion, staged, parked } = this.state;
    return {
      subscription: config,
      mode,
      parked,
      ...(lastAppliedVersion !== undefined ? { lastAppliedVersion } : {}),
      ...(adopting && staged ? { expectVersion: staged.listVersion } : {}),
      ...(adopting ? { adoptOffered: true } : {}),
      ...(adopting && staged?.images?.length ? { useStaged: true } : {}),
    };
  }

  /** What `discard-staged` needs, when something is staged. */
  discardInput(): SyncInput | undefined {
    const { config, staged, parked } = this.state;
    if (!staged?.images?.length || staged.listIdentifier === undefined) return undefined;
    return { subscription: config, mode: 'discard-staged', stagedList: staged.listIdentifier, parked };
  }

  /** The staged images are gone (or parked, when a VM still used one). */
  discarded(by: string, reason: string, result: SyncResult, at: string): void {
    this.state.parked = result.parked;
    delete this.state.staged;
    const failed = result.outcomes.filter((o) => !o.ok);
    this.record(by, 'unstaged', `${reason}: ${result.outcomes.map((o) => `${o.identifier} ${o.note ?? ''}`.trim()).join(', ')}${failed.length ? `; failed: ${failed.length}` : ''}`, at);
  }

  applyResult(run: number, by: string, result: SyncResult, at: string): SyncOutcome {
    const s = this.state;
    const failed = result.outcomes.filter((o) => !o.ok);
    const failures = failed.length ? `; failed: ${failed.map((f) => `${f.identifier} (${f.note})`).join(', ')}` : '';
    if (!result.applied) {
      s.staged = { listVersion: result.listVersion, listIdentifier: result.listIdentifier, at, report: result.report, images: result.staged ?? [] };
      s.parked = result.parked;
      this.record(by, 'staged', `list ${result.listVersion}: ${summary(result.report)}; ${result.staged?.length ?? 0} images staged${failures}`, at);
      return { run, at, by, status: 'staged', listVersion: result.listVersion, report: result.report, ...(result.outcomes.length ? { outcomes: result.outcomes } : {}) };
    }
    s.config = { ...s.config, identifier: s.config.identifier ?? result.listIdentifier };
    s.lastAppliedVersion = result.listVersion;
    s.parked = result.parked;
    // A swap that failed put its staged image back: a second adopt tries again.
    if (result.staged?.length) s.staged = { listVersion: result.listVersion, listIdentifier: result.listIdentifier, at, report: result.report, images: result.staged };
    else delete s.staged;
    for (const outcome of result.outcomes) if (outcome.action !== 'stage' && outcome.action !== 'unstage') this.applyOutcome({ ...outcome, action: outcome.action }, result.listVersion, at);
    const status: SyncStatus = failed.length ? 'partial' : result.expired ? 'expired' : 'applied';
    this.record(by, status, `list ${result.listVersion}: ${summary(result.report)}${failures}`, at);
    return { run, at, by, status, listVersion: result.listVersion, report: result.report, outcomes: result.outcomes, ...(result.expired ? { reason: result.expired } : {}) };
  }

  private applyOutcome(outcome: ImageOutcome & { action: keyof typeof APPLIED_STATE }, listVersion: string, at: string): void {
    const before = this.state.images[outcome.identifier];
    const appliance: Appliance = {
      ...before,
      subscription: this.state.config.name,
      identifier: outcome.identifier,
      listVersion,
      state: outcome.ok ? APPLIED_STATE[outcome.action] : 'failed',
      lastChange: at,
    };
    if (outcome.title !== undefined) appliance.title = outcome.title;
    // A failed swap leaves the old image in place: it keeps its version.
    if (outcome.imageVersion !== undefined && outcome.ok) appliance.imageVersion = outcome.imageVersion;
    if (outcome.registryName !== undefined) appliance.registryName = outcome.registryName;
    if (outcome.registryId !== undefined) appliance.registryId = outcome.registryId;
    if (outcome.note !== undefined) appliance.note = clip(outcome.note);
    else delete appliance.note;
    this.state.images[outcome.identifier] = appliance;
  }

  refused(run: number, by: string, reason: string, at: string): SyncOutcome {
    this.record(by, 'refused', reason, at);
    return { run, at, by, status: 'refused', reason };
  }

  view(syncing: boolean): SubscriptionView {
    const s = this.state;
    return {
      config: s.config,
      ...(s.lastAppliedVersion !== undefined ? { lastAppliedVersion: s.lastAppliedVersion } : {}),
      ...(s.staged ? { staged: s.staged } : {}),
      ...(s.lastSync ? { lastSync: s.lastSync } : {}),
      syncing,
      images: Object.values(s.images).filter(inRegistry).length,
      parked: s.parked,
      historyEntries: s.history.length,
    };
  }
}

function summary(report: PlanReport): string {
  const parts: [string, number][] = [
    ['add', report.add.length],
    ['update', report.update.length],
    ['metadata', report.metadata.length],
    ['expire', report.expire.length],
    ['offered', report.offered.length],
    ['refused', report.refused.length],
    ['taken', report.taken?.length ?? 0],
    ['unchanged', report.unchanged.length],
  ];
  return parts.map(([k, n]) => `${n} ${k}`).join(', ');
}

export function newSubscriptionState(config: SubscriptionConfig): SubscriptionState {
  return { config: checkSubscriptionConfig(config), images: {}, parked: [], history: [], seq: 0, runs: 0 };
}

/** Bad settings fail the workflow with the field named; thrown as they are, they would retry forever. */
function startingState(config: SubscriptionConfig): SubscriptionState {
  try {
    return newSubscriptionState(config);
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, (err as Error).name);
  }
}

interface QueuedRun {
  id: number;
  by: string;
  reason: string;
  adopt: boolean;
}

function rejectOnError<I, O>(apply: (input: I) => Promise<O> | O): (input: I) => Promise<O> {
  return async (input: I) => {
    try {
      return await apply(input);
    } catch (err) {
      // Fails this update only; any other error thrown here would fail the workflow task.
      throw ApplicationFailure.nonRetryable((err as Error).message, (err as Error).name);
    }
  };
}

export async function subscriptionWorkflow(input: SubscriptionInput): Promise<SubscriptionView> {
  const sub = new Subscription(input.state ?? startingState(input.config));
  const name = sub.state.config.name;
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  const queue: QueuedRun[] = [];
  const finished = new Map<number, SyncOutcome>();
  let running: QueuedRun | undefined;
  let nextRequest = 0;
  let stopping = false;
  let stoppedBy = '';
  let stopped = false;
  const now = () => new Date().toISOString();
  upsertSearchAttributes([
    { key: SA.kind, value: 'subscription' },
    { key: SA.subscription, value: name },
  ]);

  /** Queues a run, or joins a plain sync already waiting: requests made before a run starts share it. */
  const enqueue = (by: string, reason: string, adopt: boolean): number => {
    const waiting = queue.find((q) => !q.adopt && !adopt);
    if (waiting) return waiting.id;
    const id = ++nextRequest;
    queue.push({ id, by, reason, adopt });
    return id;
  };
  const outcomeOf = async (id: number): Promise<SyncOutcome> => {
    await condition(() => finished.has(id));
    const outcome = finished.get(id)!;
    finished.delete(id);
    return outcome;
  };

  setHandler(
    syncUpdate,
    rejectOnError((request) => outcomeOf(enqueue(request.by, 'sync requested', false))),
    { validator: (request) => void checkUser('by', request?.by) },
  );
  setHandler(
    adoptUpdate,
    rejectOnError((request) => outcomeOf(enqueue(request.by, 'adopt', true))),
    { validator: (request) => sub.validateAdopt(request) },
  );
  setHandler(
    unsubscribeUpdate,
    rejectOnError(async (request) => {
      sub.record(request.by, 'unsubscribe', request.reason ?? 'unsubscribed', now());
      stopping = true;
      stoppedBy = request.by;
      // Until the running sync ended and nothing staged is left behind.
      await condition(() => stopped);
      return sub.view(false);
    }),
    {
      validator: (request) => {
        checkUser('by', request?.by);
        if (request.reason !== undefined) checkReason('reason', request.reason);
      },
    },
  );
  setHandler(syncRequestSignal, (request) => {
    const at = now();
    try {
      const by = checkUser('by', request?.by);
      const reason = checkReason('reason', request?.reason);
      if (request.skipIfBusy && (running || queue.length)) sub.record(by, 'skipped', `${reason}: a sync is already running`, at);
      else enqueue(by, reason, false);
    } catch (err) {
      sub.record('unknown', 'rejected-signal', `syncRequest: ${(err as Error).message}`, at);
    }
  });
  setHandler(describeQuery, () => sub.view(running !== undefined));
  setHandler(appliancesQuery, () => Object.values(sub.state.images).sort((a, b) => a.identifier.localeCompare(b.identifier)));
  setHandler(historyQuery, ({ last }) => sub.state.history.slice(-(last ?? sub.state.history.length)));

  /** Removes what is staged, in a run of its own; nothing happens (no command) when nothing is. */
  const discardStaged = async (by: string, reason: string): Promise<void> => {
    const discardInput = sub.discardInput();
    if (!discardInput) return;
    const run = ++sub.state.runs;
    try {
      const result = await executeChild(subscriptionSyncWorkflow, {
        workflowId: `${subscriptionWorkflowId(name)}-sync-${run}`,
        args: [discardInput],
        staticSummary: `Discard the staged images of subscription ${name}`,
      });
      sub.discarded(by, reason, result, now());
    } catch (error) {
      sub.record(by, 'unstage-failed', `${reason}: ${message(error)}`, now());
    }
  };

  const runOnce = async (request: QueuedRun): Promise<SyncOutcome> => {
    const run = ++sub.state.runs;
    const mode = sub.state.config.stage && !request.adopt ? 'dry-run' : 'apply';
    sub.record(request.by, 'sync', `run ${run} (${mode}): ${request.reason}`, now());
    try {
      const result = await executeChild(subscriptionSyncWorkflow, {
        workflowId: `${subscriptionWorkflowId(name)}-sync-${run}`,
        args: [sub.syncInput(mode, request.adopt)],
        staticSummary: `Sync of subscription ${name} (${mode})`,
      });
      return sub.applyResult(run, request.by, result, now());
    } catch (error) {
      const refused = sub.refused(run, request.by, message(error), now());
      // What an earlier list staged cannot be adopted once a list is refused: nothing stays behind.
      await discardStaged(request.by, 'the list was refused');
      return refused;
    }
  };

  while (!stopping) {
    await condition(() => queue.length > 0 || stopping || workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > maxHistory);
    if (queue.length === 0 || stopping) {
      if (stopping) break;
      await condition(allHandlersFinished);
      await continueAsNew<typeof subscriptionWorkflow>({ ...input, state: sub.state });
    }
    running = queue.shift()!;
    const outcome = await runOnce(running);
    sub.state.lastSync = outcome;
    finished.set(running.id, outcome);
    running = undefined;
  }
  // Runs still queued will not happen: their callers learn so instead of waiting forever.
  for (const request of queue.splice(0)) finished.set(request.id, { run: 0, at: now(), by: request.by, status: 'skipped', reason: 'the subscription was removed' });
  await discardStaged(stoppedBy, 'unsubscribed');
  stopped = true;
  await condition(allHandlersFinished);
  return sub.view(false);
}
