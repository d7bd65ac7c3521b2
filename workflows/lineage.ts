/**
 * The lineage of one image: the single source of truth for its versions, tags, channels and
 * history. It changes only through validated Updates (a bad request is rejected before it enters
 * history), is read through Queries, and continues as new before its history grows large,
 * first handing all but its newest history entries, and the full records of removed versions, to
 * archives on the control host, so neither grows the state it carries (a removed version leaves a stub).
 * Handlers take a lock before they change anything and check their request again under it, so
 * one that waits on an activity (gc, remove, pack) never interleaves with another.
 */
import type { UpdateDefinition } from '@temporalio/common';
import { ApplicationFailure, allHandlersFinished, condition, continueAsNew, executeChild, defineQuery, defineSignal, defineUpdate, getExternalWorkflowHandle, log, patched, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { ArchiveReadInput, ArchiveResult, LineageHistoryActivities, VersionArchiveResult } from '../activities/control/lineage-history.js';
import type { NasPackActivities, PackResult } from '../activities/nas/pack.js';
import type { NasRetentionActivities } from '../activities/nas/retention.js';
import { checkPackKind, checkReason, checkTag, checkUser, defaultTagName, isStub, packNote, stubOf, timeStamp, type Artifact, type ChannelEntry, type HistoryEntry, type PackKind, type PackRecord, type StoredVersion, type TagRecord, type TestResult, type VersionRecord, type VersionStub, type NewVersion } from '../common/lineage.js';
import { checkRoom, checkText, DEFAULT_STATE_BUDGET, jsonBytes, TEXT_LIMITS, type StateBudget } from '../common/limits.js';
import { checkInt, checkName, InputError } from '../common/names.js';
import { CONTROL_QUEUE, queues } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import type { BuildRequest } from './build/messages.js';
import { buildWorkflow } from './build/workflow.js';
import { historyFull } from './support/continue-as-new.js';
import { appendHistory } from './support/history.js';
import { failureMessage, noWorkerTook } from './support/failures.js';
import { Lock } from './support/lock.js';
import { handleUpdate } from './support/updates.js';

export interface LineageState {
  image: string;
  /** Removed versions whose full record is archived are stubs. */
  versions: StoredVersion[];
  tags: Record<string, TagRecord>;
  channels: Record<string, ChannelEntry[]>;
  tests: Record<string, TestResult>;
  /** Channels that need a passed test result of the tag before a promotion. */
  gated: string[];
  /** The newest history entries; older ones are in the archive. */
  history: HistoryEntry[];
  seq: number;
  /** Where the older history entries went (absent until the first were archived). */
  archive?: HistoryArchive;
  /** Builds waiting their turn; the first is the one running. */
  builds: QueuedBuild[];
  /** Deployables by name (absent in states saved before packing existed). */
  packs?: Record<string, PackRecord>;
  /** Volumes cloned from a version, as the last gc or remove request listed them. */
  volumes?: Record<string, string>;
  /** Where the full records of removed versions went (absent until the first were archived). */
  versionArchive?: VersionArchive;
}

/** The archived part of a lineage's history: a file on the control host, entries 1..count of it. */
export interface HistoryArchive {
  /** The lineage's first run id, which names the file. */
  chain: string;
  host: string;
  path: string;
  /** How many entries the archive holds; the lineage's state holds the rest. */
  count: number;
  /** The seq of the newest archived entry. */
  throughSeq: number;
}

/** The full records of a lineage's removed versions: a file on the control host, `count` records. */
export interface VersionArchive {
  chain: string;
  host: string;
  path: string;
  count: number;
}

/** What the history query answers: the entries in the state, and where the older ones are. */
export interface HistoryView {
  entries: HistoryEntry[];
  archive?: HistoryArchive;
}

export interface QueuedBuild {
  id: string;
  requestedAt: string;
  request: BuildRequest;
}

export interface LineageInput {
  image: string;
  state?: LineageState;
  /** Continue as new past this many history events (the server also suggests it). */
  maxHistoryEvents?: number;
  /** History entries kept in the state across a continue-as-new; older ones are archived (default 500). */
  keepHistory?: number;
  /** Where the state sheds and where it refuses to grow (defaults: half and three quarters of Temporal's payload limit). */
  budget?: StateBudget;
  /** The run whose state this one took over after it ended without handing it on. */
  recoveredFrom?: { runId: string; status: string };
}

/** Retention's request: `volumes` are the volumes cloned from this image, as the caller found them. */
export interface GcInput {
  by: string;
  keep?: number;
  dryRun?: boolean;
  volumes?: { volume: string; version: string }[];
}

export interface GcResult {
  keep: number;
  dryRun: boolean;
  removed: string[];
  kept: { version: string; why: string[] }[];
  /** Files deleted from the stores (0 on a dry run). */
  files: number;
}

export interface RemoveInput {
  by: string;
  /** The version to remove; none removes every version. */
  version?: string;
  volumes?: { volume: string; version: string }[];
}

/** A pack's request; whether the version's image may hold password hashes is its recipe's say. */
export interface PackInput {
  by: string;
  tag: string;
  /** The deployable's name; the image's name when absent. */
  as?: string;
  /** Netboot when the version has a squashfs artifact, else a VM base; a version with both may be packed as either. */
  kind?: PackKind;
  /** Refuse a root image larger than this (default 8 GiB). */
  maxRootBytes?: number;
}

export type PackOutcome = PackRecord & { name: string; movedAside?: string; root?: string; note?: string };

export const DEFAULT_KEEP = 5;
export const DEFAULT_KEEP_HISTORY = 500;
export const DEFAULT_MAX_ROOT_BYTES = 8 * 1024 ** 3;
/** Entries per archive request: each request's payload stays far below Temporal's 2 MB limit. */
const ARCHIVE_BATCH = 500;
/** Version records per archive request (each up to a few KB). */
const VERSION_BATCH = 200;
/** What a state past its shed bound keeps across a continue-as-new: fewer history entries, and each channel's newest entries (the history records every one). */
const SHED_KEEP_HISTORY = 50;
const SHED_KEEP_CHANNEL = 100;

export const lineageWorkflowId = (image: string) => `lineage-${checkName('image', image)}`;

export const registerVersionUpdate = defineUpdate<VersionRecord, [NewVersion]>('registerVersion');
export const tagUpdate = defineUpdate<TagRecord & { name: string }, [{ by: string; version?: string; name?: string }]>('tag');
export const promoteUpdate = defineUpdate<ChannelEntry, [{ by: string; tag: string; channel: string; force?: boolean; reason?: string }]>('promote');
export const rollbackUpdate = defineUpdate<ChannelEntry, [{ by: string; channel: string; reason?: string }]>('rollback');
export const testResultUpdate = defineUpdate<TestResult, [TestResultInput]>('testResult');
export const testResultSignal = defineSignal<[TestResultInput]>('testResult');
/** The channels whose promotions need a passed test result of the tag (prod when a lineage starts). */
export const gateUpdate = defineUpdate<string[], [{ by: string; channels: string[] }]>('gate');
export const revokeUpdate = defineUpdate<StoredVersion, [{ by: string; version: string; reason: string }]>('revoke');

export const gcUpdate = defineUpdate<GcResult, [GcInput]>('gc');
/** What the daily schedule sends (through `lineageGcWorkflow`): a gc with the lineage's own settings. */
export const gcSignal = defineSignal<[GcInput]>('gc');
export const removeUpdate = defineUpdate<{ removed: string[]; files: number }, [RemoveInput]>('remove');
export const packUpdate = defineUpdate<PackOutcome, [PackInput]>('pack');

export const requestBuildUpdate = defineUpdate<BuildTicket, [BuildRequest]>('requestBuild');
export const describeQuery = defineQuery<LineageView>('describe');
/** A version's full record, or the stub of a removed one whose record is archived. */
export const versionQuery = defineQuery<StoredVersion, [string]>('version');
export const historyQuery = defineQuery<HistoryView, [{ last?: number }]>('history');
/** The whole state: what a lineage that ended without handing it on is recovered from (a closed run still answers queries). */
export const stateQuery = defineQuery<LineageState>('state');

/** What a build request gets back: the build's workflow id and the builds ahead of it. */
export interface BuildTicket {
  buildId: string;
  ahead: string[];
}

export interface TestResultInput {
  by: string;
  tag: string;
  passed: boolean;
  note?: string;
}

export interface LineageView {
  image: string;
  versions: (Omit<VersionRecord, 'report' | 'manifests' | 'provenance'> | VersionStub)[];
  tags: Record<string, TagRecord>;
  channels: Record<string, { current?: ChannelEntry; entries: number }>;
  tests: Record<string, TestResult>;
  /** Channels whose promotions need a passed test result. */
  gated: string[];
  /** All of them, archived or not. */
  historyEntries: number;
  builds: { id: string; by: string; requestedAt: string }[];
  packs: Record<string, PackRecord>;
  volumes: Record<string, string>;
  versionArchive?: VersionArchive;
}

const CHANNEL = /^[a-z][a-z0-9-]{0,31}$/;

export function checkChannel(field: string, value: unknown): string {
  if (typeof value !== 'string' || !CHANNEL.test(value)) throw new InputError(field, 'a channel name of 1-32 lower-case letters, digits or "-"', value);
  return value;
}

export function newLineageState(image: string): LineageState {
  return { image: checkName('image', image), versions: [], tags: {}, channels: {}, tests: {}, gated: ['prod'], history: [], seq: 0, builds: [], packs: {}, volumes: {} };
}

const volumeMap = (list: { volume: string; version: string }[]) => Object.fromEntries(list.map((v) => [v.volume, v.version]));

function checkVolumes(field: string, value: unknown): { volume: string; version: string }[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new InputError(field, 'a list of {volume, version}', value);
  return value.map((v: { volume?: unknown; version?: unknown }, i) => ({ volume: checkName(`${field}[${i}].volume`, v?.volume), version: checkName(`${field}[${i}].version`, v?.version) }));
}

/** The rules of a lineage, as pure functions of its state: the workflow only wires them up. */
export class Lineage {
  /** The state's size as a payload, as last measured. */
  bytes = 0;

  constructor(readonly state: LineageState) {
    state.packs ??= {};
    state.volumes ??= {};
  }

  measure(): number {
    return (this.bytes = jsonBytes(this.state));
  }

  /** Each channel keeps its newest `keep` entries; the history still names every promotion and rollback. */
  trimChannels(keep: number): void {
    for (const [name, entries] of Object.entries(this.state.channels)) if (entries.length > keep) this.state.channels[name] = entries.slice(-keep);
  }

  version(id: string): StoredVersion {
    const v = this.state.versions.find((x) => x.id === id);
    if (!v) throw new InputError('version', `a version of ${this.state.image} (${this.state.versions.map((x) => x.id).join(', ') || 'none yet'})`, id);
    return v;
  }

  tagged(tag: string): { tag: TagRecord; version: StoredVersion } {
    const t = this.state.tags[checkTag('tag', tag)];
    if (!t) throw new InputError('tag', `a tag of ${this.state.image}`, tag);
    return { tag: t, version: this.version(t.version) };
  }

  usable(v: StoredVersion, action: string): VersionRecord {
    if (v.removed) throw new InputError('version', `a version whose files are still stored (${v.id} was removed by ${v.removed.by}: ${v.removed.reason}) to ${action}`, v.id);
    if (v.revoked) throw new InputError('version', `a version that is not revoked (${v.id} was revoked by ${v.revoked.by}: ${v.revoked.reason}) to ${action}`, v.id);
    // Only removed versions become stubs.
    return v as VersionRecord;
  }

  latest(): VersionRecord {
    const v = [...this.state.versions].reverse().find((x): x is VersionRecord => isStored(x) && !x.revoked);
    if (!v) throw new InputError('version', `a built version of ${this.state.image}`, undefined);
    return v;
  }

  record(by: string, op: string, detail: string, at: string): void {
    appendHistory(this.state, { at, by, op, detail });
  }

  nextVersionId(): string {
    return `v${this.state.versions.length + 1}`;
  }

  validateRegister(v: NewVersion): void {
    checkUser('by', v.by);
    checkText('message', v.message, 'message');
    if (!v.artifacts?.length) throw new InputError('artifacts', 'at least one verified artifact', v.artifacts);
    if (v.origin && this.state.versions.length) throw new InputError('image', `a new image to clone into (${this.state.image} already has ${this.state.versions.length} versions)`, this.state.image);
  }

  register(v: NewVersion, at: string): VersionRecord {
    const record: VersionRecord = { ...v, id: this.nextVersionId() };
    this.state.versions.push(record);
    this.record(v.by, 'register', `${record.id} (${record.artifacts.map((a) => `${a.format} ${a.sha256.slice(0, 12)}`).join(', ')}): ${v.message}`, at);
    return record;
  }

  validateBuild(request: BuildRequest): void {
    checkUser('by', request.by);
    checkText('message', request.message, 'message');
    if (request.recipe?.image !== this.state.image) throw new InputError('recipe.image', `${this.state.image} (this lineage)`, request.recipe?.image);
    checkName('store', request.store);
  }

  enqueueBuild(request: BuildRequest, at: string): BuildTicket {
    const ahead = this.state.builds.map((b) => b.id);
    const id = `build-${this.state.image}-${++this.state.seq}`;
    this.state.builds.push({ id, requestedAt: at, request });
    this.record(request.by, 'build-requested', `${id}${ahead.length ? ` (after ${ahead.join(', ')})` : ''}: ${request.message}`, at);
    return { buildId: id, ahead };
  }

  validateTag(input: { by: string; version?: string; name?: string }): void {
    checkUser('by', input.by);
    if (input.name !== undefined && this.state.tags[checkTag('name', input.name)]) {
      throw new InputError('name', `a tag name not yet used (${input.name} is ${this.state.tags[input.name]!.version})`, input.name);
    }
    this.usable(input.version ? this.version(input.version) : this.latest(), 'tag');
  }

  tag(input: { by: string; version?: string; name?: string }, at: string): TagRecord & { name: string } {
    const version = input.version ?? this.latest().id;
    const name = input.name ?? this.freeName(defaultTagName(new Date(at), input.by));
    this.state.tags[name] = { version, at, by: input.by };
    this.record(input.by, 'tag', `${name} -> ${version}`, at);
    return { name, ...this.state.tags[name] };
  }

  /** The default tag name, with a counter when one was already made within the same second. */
  private freeName(base: string): string {
    let name = base;
    for (let n = 2; this.state.tags[name]; n++) name = `${base}.${n}`;
    return name;
  }

  validatePromote(input: { by: string; tag: string; channel: string; force?: boolean; reason?: string }): void {
    checkUser('by', input.by);
    checkChannel('channel', input.channel);
    if (input.reason !== undefined || input.force) checkReason('reason', input.reason);
    this.usable(this.tagged(input.tag).version, 'promote');
    if (input.force) return;
    if (this.state.gated.includes(input.channel)) {
      const test = this.state.tests[input.tag];
      if (!test?.passed) {
        throw new InputError('tag', `a tag with a passed test result to promote to gated channel ${input.channel} (${input.tag} has ${test ? 'a failed one' : 'none'}; --force --reason overrides)`, input.tag);
      }
    }
  }

  /** The channel's current entry when it is this very promotion (the same request sent twice, or two at once). */
  alreadyPromoted(input: { tag: string; channel: string }): ChannelEntry | undefined {
    const current = this.state.channels[input.channel]?.at(-1);
    return current?.action === 'promote' && current.tag === input.tag ? current : undefined;
  }

  promote(input: { by: string; tag: string; channel: string; force?: boolean; reason?: string }, at: string): ChannelEntry {
    const entry: ChannelEntry = { version: this.tagged(input.tag).version.id, tag: input.tag, at, by: input.by, action: 'promote' };
    if (input.reason) entry.reason = input.reason;
    if (input.force) entry.forced = true;
    (this.state.channels[input.channel] ??= []).push(entry);
    this.record(input.by, 'promote', `${input.channel} -> ${input.tag} (${entry.version})${input.force ? ` forced: ${input.reason}` : ''}`, at);
    return entry;
  }

  /** The entry a rollback returns to: the one before the current, skipping revoked versions. */
  previous(channel: string): ChannelEntry {
    const entries = this.state.channels[checkChannel('channel', channel)] ?? [];
    const current = entries.at(-1);
    const before = [...entries.slice(0, -1)].reverse().find((e) => e.version !== current?.version && !this.version(e.version).revoked && !this.version(e.version).removed);
    if (!before) throw new InputError('channel', `a channel with an earlier entry to roll back to (${channel} has ${entries.length ? 'none usable' : 'no history'})`, channel);
    return before;
  }

  validateRollback(input: { by: string; channel: string; reason?: string }): void {
    checkUser('by', input.by);
    if (input.reason !== undefined) checkReason('reason', input.reason);
    this.previous(input.channel);
  }

  rollback(input: { by: string; channel: string; reason?: string }, at: string): ChannelEntry {
    const to = this.previous(input.channel);
    const entry: ChannelEntry = { version: to.version, tag: to.tag, at, by: input.by, action: 'rollback', ...(input.reason ? { reason: input.reason } : {}) };
    this.state.channels[input.channel]!.push(entry);
    this.record(input.by, 'rollback', `${input.channel} -> ${to.tag} (${to.version})`, at);
    return entry;
  }

  validateTestResult(input: TestResultInput): void {
    checkUser('by', input.by);
    this.tagged(input.tag);
    if (typeof input.passed !== 'boolean') throw new InputError('passed', 'true or false', input.passed);
    if (input.note !== undefined && (typeof input.note !== 'string' || input.note.length > TEXT_LIMITS.note)) throw new InputError('note', `at most ${TEXT_LIMITS.note} characters`, input.note);
  }

  testResult(input: TestResultInput, at: string): TestResult {
    const result: TestResult = { passed: input.passed, at, by: input.by, ...(input.note ? { note: input.note } : {}) };
    this.state.tests[input.tag] = result;
    this.record(input.by, 'test-result', `${input.tag} ${input.passed ? 'passed' : 'failed'}${input.note ? `: ${input.note}` : ''}`, at);
    return result;
  }

  validateGate(input: { by: string; channels: string[] }): void {
    checkUser('by', input.by);
    if (!Array.isArray(input.channels) || input.channels.length > 32) throw new InputError('channels', 'a list of at most 32 channel names', input.channels);
    input.channels.forEach((c, i) => checkChannel(`channels[${i}]`, c));
  }

  gate(input: { by: string; channels: string[] }, at: string): string[] {
    this.state.gated = [...new Set(input.channels)].sort();
    this.record(input.by, 'gate', `gated: ${this.state.gated.join(', ') || 'none'}`, at);
    return this.state.gated;
  }

  validateRevoke(input: { by: string; version: string; reason: string }): void {
    checkUser('by', input.by);
    checkReason('reason', input.reason);
    const v = this.version(input.version);
    if (v.revoked) throw new InputError('version', 'a version not yet revoked', input.version);
  }

  revoke(input: { by: string; version: string; reason: string }, at: string): StoredVersion {
    const v = this.version(input.version);
    v.revoked = { reason: input.reason, by: input.by, at };
    this.record(input.by, 'revoke', `${v.id}: ${input.reason}`, at);
    return v;
  }

  /** What still refers to a version: tags, channels' current entries, packs and volumes. */
  references(id: string, volumes: Record<string, string> = this.state.volumes!): string[] {
    const s = this.state;
    return [
      ...Object.entries(s.tags).filter(([, t]) => t.version === id).map(([name]) => `tag ${name}`),
      ...Object.entries(s.channels).filter(([, e]) => e.at(-1)?.version === id).map(([name]) => `channel ${name}`),
      ...Object.entries(s.packs!).filter(([, p]) => p.version === id).map(([name]) => `pack ${name}`),
      ...Object.entries(volumes).filter(([, v]) => v === id).map(([name]) => `volume ${name}`),
    ];
  }

  /** Retention: the newest `keep` stored versions and every referenced one stay; the rest go. */
  retention(keep: number, volumes: Record<string, string> = this.state.volumes!): { remove: VersionRecord[]; kept: { version: string; why: string[] }[] } {
    const stored = this.state.versions.filter(isStored);
    const newest = new Set(stored.slice(-keep).map((v) => v.id));
    const kept: { version: string; why: string[] }[] = [];
    const remove: VersionRecord[] = [];
    for (const v of stored) {
      const why = [...(newest.has(v.id) ? [`newest ${keep}`] : []), ...this.references(v.id, volumes)];
      if (why.length) kept.push({ version: v.id, why });
      else remove.push(v);
    }
    return { remove, kept };
  }

  validateGc(input: GcInput): void {
    checkUser('by', input.by);
    if (input.keep !== undefined) checkInt('keep', input.keep, 1, 10_000);
    if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean') throw new InputError('dryRun', 'true or false', input.dryRun);
    checkVolumes('volumes', input.volumes);
  }

  /** The volumes the caller found replace the ones known before (a deleted volume refers to nothing). */
  noteVolumes(volumes: { volume: string; version: string }[] | undefined): void {
    if (volumes) this.state.volumes = volumeMap(volumes);
  }

  /** Marks versions removed and records why; their files are deleted after this. */
  markRemoved(versions: VersionRecord[], by: string, reason: string, at: string): void {
    for (const v of versions) v.removed = { reason, by, at };
    if (versions.length) this.record(by, 'remove', `${versions.map((v) => v.id).join(', ')}: ${reason}`, at);
  }

  validateRemove(input: RemoveInput): VersionRecord[] {
    checkUser('by', input.by);
    const volumes = checkVolumes('volumes', input.volumes);
    const one = input.version !== undefined ? this.version(input.version) : undefined;
    if (one?.removed) throw new InputError('version', `a stored version (${one.id} was removed ${one.removed.at})`, one.id);
    const targets = (one ? [one] : this.state.versions).filter(isStored);
    const known = volumes ? volumeMap(volumes) : this.state.volumes!;
    for (const v of targets) {
      const all = this.references(v.id, known);
      if (all.length) throw new InputError(input.version !== undefined ? 'version' : 'image', `something no longer referenced (${this.state.image}:${v.id} is still referenced by ${all.join(', ')})`, input.version ?? this.state.image);
    }
    return targets;
  }

  /** The version, the name, and what gets published: its squashfs for netboot, its qcow2 (else raw) for a VM base. */
  validatePack(input: PackInput): { version: VersionRecord; name: string; kind: PackKind; root: Artifact } {
    checkUser('by', input.by);
    const version = this.usable(this.tagged(input.tag).version, 'pack');
    const name = checkName('as', input.as ?? this.state.image);
    const cap = input.maxRootBytes === undefined ? DEFAULT_MAX_ROOT_BYTES : checkInt('maxRootBytes', input.maxRootBytes, 1, Number.MAX_SAFE_INTEGER);
    const squash = version.artifacts.find((a) => a.format === 'squashfs');
    const disk = version.artifacts.find((a) => a.format === 'qcow2') ?? version.artifacts.find((a) => a.format === 'raw');
    const kind = input.kind === undefined ? (squash ? 'netboot' : 'vm') : checkPackKind('kind', input.kind);
    const root = kind === 'netboot' ? squash : disk;
    if (!root) throw new InputError('kind', `a kind ${version.id} can be packed as (it has ${version.artifacts.map((a) => a.format).join(', ')}: netboot needs squashfs, vm qcow2 or raw)`, kind);
    // One name, one kind: a boot directory and a VM base under one name would leave one unrecorded.
    const existing = this.state.packs![name];
    const taken = existing && (existing.kind ?? 'netboot');
    if (taken && taken !== kind) throw new InputError('as', `a name free for a ${kind} pack (${name} is a ${taken} pack of ${this.state.image})`, name);
    if (root.bytes > cap) throw new InputError('tag', `a version whose root image fits the cap of ${cap} bytes (${version.id}'s ${root.format} is ${root.bytes})`, input.tag);
    return { version, name, kind, root };
  }

  recordPack(input: PackInput, name: string, version: VersionRecord, kind: PackKind, done: PackResult, at: string): PackRecord {
    const record: PackRecord = {
      version: version.id,
      tag: input.tag,
      at,
      by: input.by,
      kind,
      host: done.host,
      path: done.path,
      ...(done.format ? { format: done.format } : {}),
      ...(done.kernel ? { kernel: done.kernel } : {}),
      ...(done.initrd ? { initrd: done.initrd } : {}),
    };
    this.state.packs![name] = record;
    const note = packNote(record);
    this.record(input.by, 'pack', `${name} -> ${input.tag} (${version.id}) as ${kind} at ${done.host}:${done.path}${done.movedAside ? `, previous moved aside to ${done.movedAside}` : ''}${note ? `; ${note}` : ''}`, at);
    return record;
  }

  /** The newest `last` entries in the state (all when absent), and where the older ones are. */
  historyView(last?: number): HistoryView {
    const entries = last === undefined ? this.state.history : last > 0 ? this.state.history.slice(-last) : [];
    return { entries, ...(this.state.archive ? { archive: this.state.archive } : {}) };
  }

  /** The oldest entries, now in the archive, leave the state. */
  archived(entries: HistoryEntry[], done: ArchiveResult, chain: string): void {
    const throughSeq = entries.at(-1)!.seq;
    this.state.history = this.state.history.filter((e) => e.seq > throughSeq);
    this.state.archive = { chain, host: done.host, path: done.path, count: (this.state.archive?.count ?? 0) + entries.length, throughSeq };
  }

  /** Removed versions whose full record is still in the state: the next to archive. */
  unarchived(): VersionRecord[] {
    return this.state.versions.filter((v): v is VersionRecord => !isStub(v) && Boolean(v.removed));
  }

  /** Versions the archive now holds leave a stub in the state; the archive counts them. */
  versionsArchived(done: VersionArchiveResult, chain: string): void {
    const archived = new Set(done.archived);
    this.state.versions = this.state.versions.map((v) => (!isStub(v) && v.removed && archived.has(v.id) ? stubOf({ ...v, removed: v.removed }) : v));
    this.state.versionArchive = { chain, host: done.host, path: done.path, count: done.count };
  }

  view(): LineageView {
    const s = this.state;
    return {
      image: s.image,
      versions: s.versions.map((v) => (isStub(v) ? v : listed(v))),
      tags: s.tags,
      channels: Object.fromEntries(Object.entries(s.channels).map(([name, entries]) => [name, { current: entries.at(-1), entries: entries.length }])),
      tests: s.tests,
      gated: s.gated,
      historyEntries: (s.archive?.count ?? 0) + s.history.length,
      builds: s.builds.map((b) => ({ id: b.id, by: b.request.by, requestedAt: b.requestedAt })),
      packs: s.packs!,
      volumes: s.volumes!,
      ...(s.versionArchive ? { versionArchive: s.versionArchive } : {}),
    };
  }
}

/** A version whose files are still stored (a stub is always of a removed one). */
const isStored = (v: StoredVersion): v is VersionRecord => !v.removed;

/** A version as listings show it: without its report, manifests and provenance. */
const listed = ({ report: _r, manifests: _m, provenance: _p, ...rest }: VersionRecord) => rest;

async function runBuild(lineage: Lineage, queued: QueuedBuild): Promise<void> {
  const version = lineage.nextVersionId();
  try {
    const result = await executeChild(buildWorkflow, {
      workflowId: queued.id,
      args: [{ ...queued.request, version }],
      typedSearchAttributes: [
        { key: SA.kind, value: 'build' },
        { key: SA.image, value: lineage.state.image },
        { key: SA.version, value: version },
        { key: SA.arch, value: queued.request.recipe.arch },
      ],
      staticSummary: `Build ${lineage.state.image}:${version} (${queued.request.recipe.arch}) for ${queued.request.by}: ${queued.request.message}`,
    });
    lineage.register(result.record, new Date().toISOString());
  } catch (err) {
    lineage.record(queued.request.by, 'build-failed', `${queued.id}: ${failureMessage(err)}`, new Date().toISOString());
  }
}

/**
 * Validator and handler for one update: the validator rejects before anything is written; the
 * handler checks again under the lock, since another handler may have changed the state meanwhile.
 */
function handle<I, O>(lock: Lock, def: UpdateDefinition<O, [I]>, validate: (i: I) => void, apply: (i: I, at: string) => O | Promise<O>, after: () => void) {
  handleUpdate(def, validate, (input: I) =>
    lock.hold(async () => {
      validate(input);
      const result = await apply(input, new Date().toISOString());
      after();
      return result;
    }),
  );
}

const nasOptions = { scheduleToStartTimeout: '10m', startToCloseTimeout: '1h', retry: { maximumAttempts: 5, nonRetryableErrorTypes: ['InputError'] } };
const retentionOn = (host: string) => proxyActivities<NasRetentionActivities>({ taskQueue: queues.nas(host), ...nasOptions });
const packOn = (host: string) => proxyActivities<NasPackActivities>({ taskQueue: queues.nas(host), ...nasOptions });

/** Deletes the stored files of versions already marked removed, on each NAS that holds them. */
async function deleteStored(image: string, versions: VersionRecord[]): Promise<number> {
  let files = 0;
  for (const v of versions) {
    for (const host of new Set(v.artifacts.map((a) => a.host))) files += (await retentionOn(host).removeStoredVersion({ image, version: v.id })).files;
  }
  return files;
}

async function gc(lineage: Lineage, input: GcInput, at: string): Promise<GcResult> {
  const keep = input.keep ?? DEFAULT_KEEP;
  const plan = lineage.retention(keep, input.volumes ? volumeMap(input.volumes) : undefined);
  const result = { keep, dryRun: Boolean(input.dryRun), removed: plan.remove.map((v) => v.id), kept: plan.kept, files: 0 };
  if (input.dryRun) return result;
  lineage.noteVolumes(input.volumes);
  if (!plan.remove.length) return result;
  lineage.markRemoved(plan.remove, input.by, `retention (newest ${keep} and referenced versions kept)`, at);
  return { ...result, files: await deleteStored(lineage.state.image, plan.remove) };
}

async function remove(lineage: Lineage, input: RemoveInput, at: string): Promise<{ removed: string[]; files: number }> {
  const targets = lineage.validateRemove(input);
  lineage.noteVolumes(input.volumes);
  lineage.markRemoved(targets, input.by, 'imgflow remove', at);
  return { removed: targets.map((v) => v.id), files: await deleteStored(lineage.state.image, targets) };
}

const control = proxyActivities<LineageHistoryActivities>({ taskQueue: CONTROL_QUEUE, scheduleToStartTimeout: '5m', startToCloseTimeout: '2m', retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError'] } });

/**
 * Hands all but the newest `keep` history entries to the archive on the control host, a batch at
 * a time, and drops each batch from the state once it is on disk. Handlers keep running meanwhile:
 * what they record lands after the batch, so it stays. A failure loses nothing: the entries stay in
 * the state and the next continue-as-new tries again.
 */
async function archiveOlderHistory(lineage: Lineage, keep: number): Promise<void> {
  const s = lineage.state;
  const chain = s.archive?.chain ?? workflowInfo().firstExecutionRunId;
  const older = s.history.slice(0, s.history.length - keep);
  for (let i = 0; i < older.length; i += ARCHIVE_BATCH) {
    const batch = older.slice(i, i + ARCHIVE_BATCH);
    try {
      const done = await control.archiveHistory({ image: s.image, chain, after: s.archive?.throughSeq ?? 0, entries: batch });
      lineage.archived(batch, done, chain);
    } catch (err) {
      log.warn('history not archived: it stays in the state until the next continue-as-new', { image: s.image, error: failureMessage(err) });
      return;
    }
  }
}

/**
 * Hands the full records of removed versions to the version archive on the control host, a batch
 * at a time, and keeps a stub of each in the state once the archive confirms it holds the record.
 * A failure drops nothing: the records stay in the state and the next continue-as-new tries again.
 */
async function archiveRemovedVersions(lineage: Lineage): Promise<void> {
  const s = lineage.state;
  const chain = s.versionArchive?.chain ?? s.archive?.chain ?? workflowInfo().firstExecutionRunId;
  const pending = lineage.unarchived();
  for (let i = 0; i < pending.length; i += VERSION_BATCH) {
    try {
      const done = await control.archiveVersions({ image: s.image, chain, after: s.versionArchive?.count ?? 0, records: pending.slice(i, i + VERSION_BATCH) });
      lineage.versionsArchived(done, chain);
    } catch (err) {
      log.warn('removed versions not archived: their records stay in the state until the next continue-as-new', { image: s.image, error: failureMessage(err) });
      return;
    }
  }
}

/**
 * What `imgflow history` runs to read a page of a lineage's archived history: the archive is a file
 * on the control host and the CLI may run anywhere, so the read goes through Temporal to the control
 * queue like every other host's work. A query cannot run an activity, and an update to the lineage
 * would add a read to its history: hence a short workflow of its own, which records nothing.
 */
export async function lineageHistoryWorkflow(input: ArchiveReadInput): Promise<HistoryEntry[]> {
  return readOnControl(`the archived history of ${input.image}`, (reader) => reader.readArchivedHistory(input));
}

/** What `imgflow report` (and every command needing a full record) runs for a removed version whose record is archived, as `lineageHistoryWorkflow` reads history. */
export async function lineageArchivedVersionWorkflow(input: { image: string; chain: string; version: string }): Promise<VersionRecord> {
  const record = await readOnControl(`the archived record of ${input.image}:${input.version}`, (reader) => reader.readArchivedVersion(input));
  if (!record) throw ApplicationFailure.nonRetryable(`the version archive of ${input.image} (chain ${input.chain}) on the control host does not hold ${input.version}`, 'ArchiveMissing');
  return record;
}

/** Runs a read of a lineage archive on the control queue; no control worker to take it is said so. */
async function readOnControl<T>(what: string, read: (reader: LineageHistoryActivities) => Promise<T>): Promise<T> {
  const reader = proxyActivities<LineageHistoryActivities>({ taskQueue: CONTROL_QUEUE, scheduleToStartTimeout: '1m', startToCloseTimeout: '1m', retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError'] } });
  try {
    return await read(reader);
  } catch (err) {
    if (noWorkerTook(err)) {
      throw ApplicationFailure.nonRetryable(`no worker on queue ${CONTROL_QUEUE} read ${what} within a minute: is a worker of role control running?`, 'NoControlWorker');
    }
    throw err;
  }
}

async function pack(lineage: Lineage, input: PackInput, at: string): Promise<PackOutcome> {
  const { version, name, kind, root } = lineage.validatePack(input);
  // Lineages that packed before VM bases existed published every version as a boot directory.
  const vm = kind === 'vm' && patched('pack-vm');
  const host = vm ? root.host : (version.artifacts.find((a) => a.format === 'squashfs') ?? version.artifacts[0]!).host;
  const activities = packOn(host);
  const done = await (vm ? activities.packBase : activities.packBoot)({
    image: lineage.state.image,
    version: version.id,
    tag: input.tag,
    name,
    stamp: timeStamp(new Date(at)),
    artifacts: version.artifacts.filter((a) => a.host === host),
    ...(version.allowPasswordHashes ? { allowPasswordHashes: true } : {}),
  });
  const record = lineage.recordPack(input, name, version, vm ? 'vm' : 'netboot', done, at);
  const note = packNote(record);
  return { name, ...record, ...(done.movedAside ? { movedAside: done.movedAside } : {}), ...(done.root ? { root: done.root } : {}), ...(note ? { note } : {}) };
}

export async function lineageWorkflow(input: LineageInput): Promise<void> {
  const lineage = new Lineage(input.state ?? newLineageState(input.image));
  const lock = new Lock();
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  const keepHistory = input.keepHistory ?? DEFAULT_KEEP_HISTORY;
  const budget = input.budget ?? DEFAULT_STATE_BUDGET;
  if (input.recoveredFrom) lineage.record('imgflow', 'recovered', `the state of run ${input.recoveredFrom.runId}, which ended ${input.recoveredFrom.status} without handing it on`, new Date().toISOString());
  const startBytes = lineage.measure();
  // Shed once the state has grown by a quarter of the gap between the bounds in this run: a state
  // that stays large after shedding does not continue as new over and over.
  const mustShed = () => lineage.bytes >= budget.shedAt && lineage.bytes - startBytes >= (budget.refuseAt - budget.shedAt) / 4;
  /** Refuses a request that would grow a state already at its refusal bound. */
  const grows =
    <I>(validate: (i: I) => void) =>
    (i: I) => {
      checkRoom(`the lineage of ${lineage.state.image}`, lineage.bytes, budget, 'remove or gc versions it no longer needs');
      validate(i);
    };
  const publish = () => {
    lineage.measure();
    upsertSearchAttributes([
      { key: SA.kind, value: 'lineage' },
      { key: SA.image, value: lineage.state.image },
      { key: SA.channels, value: Object.entries(lineage.state.channels).map(([name, entries]) => `${name}=${entries.at(-1)?.tag ?? ''}`) },
      ...(lineage.state.versions.length ? [{ key: SA.version, value: lineage.state.versions.at(-1)!.id }] : []),
    ]);
  };
  publish();

  handle(lock, registerVersionUpdate, grows((v) => lineage.validateRegister(v)), (v, at) => lineage.register(v, at), publish);
  handle(lock, tagUpdate, grows((i) => lineage.validateTag(i)), (i, at) => lineage.tag(i, at), publish);
  handle(
    lock,
    promoteUpdate,
    grows((i) => lineage.validatePromote(i)),
    (i, at) => {
      // A promotion the channel already has records nothing new (lineages that ran before recorded it again).
      const same = lineage.alreadyPromoted(i);
      return same && patched('promote-once') ? same : lineage.promote(i, at);
    },
    publish,
  );
  handle(lock, rollbackUpdate, grows((i) => lineage.validateRollback(i)), (i, at) => lineage.rollback(i, at), publish);
  handle(lock, testResultUpdate, grows((i) => lineage.validateTestResult(i)), (i, at) => lineage.testResult(i, at), publish);
  handle(lock, gateUpdate, grows((i) => lineage.validateGate(i)), (i, at) => lineage.gate(i, at), publish);
  handle(lock, revokeUpdate, grows((i) => lineage.validateRevoke(i)), (i, at) => lineage.revoke(i, at), publish);
  // gc and remove shrink the state: they stay open when it is full.
  handle(lock, gcUpdate, (i) => lineage.validateGc(i), (i, at) => gc(lineage, i, at), publish);
  handle(lock, removeUpdate, (i) => void lineage.validateRemove(i), (i, at) => remove(lineage, i, at), publish);
  handle(lock, packUpdate, grows((i) => void lineage.validatePack(i)), (i, at) => pack(lineage, i, at), publish);
  // Other systems (a CI job that booted a test node) report by signal; a bad one is dropped and
  // recorded, unless the state is full, when it is only logged.
  setHandler(testResultSignal, (i) => {
    const at = new Date().toISOString();
    try {
      grows((r: TestResultInput) => lineage.validateTestResult(r))(i);
      lineage.testResult(i, at);
    } catch (err) {
      if (lineage.bytes >= budget.refuseAt) log.warn('testResult signal dropped', { image: lineage.state.image, error: (err as Error).message });
      else lineage.record(typeof i?.by === 'string' ? i.by : 'unknown', 'rejected-signal', `testResult: ${(err as Error).message}`, at);
    }
    lineage.measure();
  });
  // The daily schedule's gc: a failure is recorded, never thrown.
  setHandler(gcSignal, (i) =>
    lock.hold(async () => {
      const at = new Date().toISOString();
      try {
        lineage.validateGc(i);
        await gc(lineage, i, at);
        publish();
      } catch (err) {
        lineage.record(typeof i?.by === 'string' ? i.by : 'unknown', 'gc-failed', failureMessage(err), at);
      }
    }),
  );
  setHandler(describeQuery, () => lineage.view());
  setHandler(versionQuery, (id) => lineage.version(id));
  setHandler(historyQuery, ({ last }) => lineage.historyView(last));
  setHandler(stateQuery, () => lineage.state);

  handle(lock, requestBuildUpdate, grows((r) => lineage.validateBuild(r)), (r, at) => lineage.enqueueBuild(r, at), publish);

  // One build at a time per image, in the order asked; continue as new only between builds.
  for (;;) {
    await condition(() => lineage.state.builds.length > 0 || historyFull(maxHistory) || mustShed());
    const next = lineage.state.builds[0];
    if (!next) break;
    await runBuild(lineage, next);
    lineage.state.builds.shift();
    publish();
  }
  // A state past its shed bound hands on less than usual; one below it hands on the same as before the bound existed.
  const shedding = lineage.measure() >= budget.shedAt;
  const keep = shedding ? Math.min(keepHistory, SHED_KEEP_HISTORY) : keepHistory;
  // Lineages that continued as new before the archive existed carried their whole history.
  if (lineage.state.history.length > keep && patched('archive-history')) await archiveOlderHistory(lineage, keep);
  // Lineages that continued as new before the version archive existed carried every full record.
  if (lineage.unarchived().length && patched('archive-versions')) await archiveRemovedVersions(lineage);
  if (shedding) lineage.trimChannels(SHED_KEEP_CHANNEL);
  await condition(allHandlersFinished);
  await continueAsNew<typeof lineageWorkflow>({ ...input, recoveredFrom: undefined, state: lineage.state });
}

/** What the daily retention schedule starts: it asks the image's lineage for a gc and ends. */
export async function lineageGcWorkflow(input: { image: string; keep?: number }): Promise<void> {
  await getExternalWorkflowHandle(lineageWorkflowId(input.image)).signal(gcSignal, { by: 'schedule', ...(input.keep ? { keep: input.keep } : {}) });
}
