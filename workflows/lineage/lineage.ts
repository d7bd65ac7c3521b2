/** The rules of a lineage, as plain code over its state: every check and change an update makes. */
import { checkTargets, type EventContext } from '../../common/events.js';
import type { ArchiveResult, VersionArchiveResult } from '../../activities/control/lineage-history.js';
import {
  checkChannel,
  checkReason,
  checkTag,
  checkUser,
  defaultTagName,
  isStub,
  stubOf,
  type ChannelEntry,
  type HistoryEntry,
  type NewVersion,
  type StoredVersion,
  type TagRecord,
  type TestResult,
  type VersionRecord,
} from '../../common/lineage.js';
import { checkText, jsonBytes, TEXT_LIMITS } from '../../common/limits.js';
import { checkName, InputError } from '../../common/names.js';
import type { BuildRequest } from '../build/messages.js';
import { appendHistory, type RecordListener } from '../support/history.js';
import type { BuildTicket, LineageState, TestResultInput } from './messages.js';

export function newLineageState(image: string): LineageState {
  return {
    image: checkName('image', image),
    versions: [],
    tags: {},
    channels: {},
    tests: {},
    gated: ['prod'],
    history: [],
    seq: 0,
    builds: [],
    packs: {},
    volumes: {},
  };
}

/** Volumes as the map the state keeps: volume name to the version it runs. */
export const volumeMap = (list: { volume: string; version: string }[]) =>
  Object.fromEntries(list.map((v) => [v.volume, v.version]));

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
    for (const [name, entries] of Object.entries(this.state.channels))
      if (entries.length > keep) this.state.channels[name] = entries.slice(-keep);
  }

  version(id: string): StoredVersion {
    const v = this.state.versions.find((x) => x.id === id);
    if (!v)
      throw new InputError(
        'version',
        `a version of ${this.state.image} (${this.state.versions.map((x) => x.id).join(', ') || 'none yet'})`,
        id,
      );
    return v;
  }

  tagged(tag: string): { tag: TagRecord; version: StoredVersion } {
    const t = this.state.tags[checkTag('tag', tag)];
    if (!t) throw new InputError('tag', `a tag of ${this.state.image}`, tag);
    return { tag: t, version: this.version(t.version) };
  }

  usable(v: StoredVersion, action: string): VersionRecord {
    if (v.removed)
      throw new InputError(
        'version',
        `a version whose files are still stored (${v.id} was removed by ${v.removed.by}: ${v.removed.reason}) to ${action}`,
        v.id,
      );
    if (v.revoked)
      throw new InputError(
        'version',
        `a version that is not revoked (${v.id} was revoked by ${v.revoked.by}: ${v.revoked.reason}) to ${action}`,
        v.id,
      );
    // Only removed versions become stubs.
    return v as VersionRecord;
  }

  latest(): VersionRecord {
    const v = [...this.state.versions].reverse().find((x): x is VersionRecord => isStored(x) && !x.revoked);
    if (!v) throw new InputError('version', `a built version of ${this.state.image}`, undefined);
    return v;
  }

  onRecord?: RecordListener;

  record(by: string, op: string, detail: string, at: string, context?: EventContext): void {
    const entry = appendHistory(this.state, { at, by, op, detail });
    this.onRecord?.(entry, context);
  }

  nextVersionId(): string {
    return `v${this.state.versions.length + 1}`;
  }

  validateRegister(v: NewVersion): void {
    checkUser('by', v.by);
    checkText('message', v.message, 'message');
    if (!v.artifacts?.length) throw new InputError('artifacts', 'at least one verified artifact', v.artifacts);
    if (v.origin && this.state.versions.length)
      throw new InputError(
        'image',
        `a new image to clone into (${this.state.image} already has ${this.state.versions.length} versions)`,
        this.state.image,
      );
  }

  register(v: NewVersion, at: string, context?: EventContext): VersionRecord {
    const record: VersionRecord = { ...v, id: this.nextVersionId() };
    this.state.versions.push(record);
    this.record(
      v.by,
      'register',
      `${record.id} (${record.artifacts.map((a) => `${a.format} ${a.sha256.slice(0, 12)}`).join(', ')}): ${v.message}`,
      at,
      context,
    );
    return record;
  }

  validateBuild(request: BuildRequest): void {
    checkUser('by', request.by);
    checkText('message', request.message, 'message');
    if (request.recipe?.image !== this.state.image)
      throw new InputError('recipe.image', `${this.state.image} (this lineage)`, request.recipe?.image);
    checkName('store', request.store);
    if (request.notify !== undefined) checkTargets('notify', request.notify);
  }

  enqueueBuild(request: BuildRequest, at: string): BuildTicket {
    const ahead = this.state.builds.map((b) => b.id);
    const id = `build-${this.state.image}-${++this.state.seq}`;
    this.state.builds.push({ id, requestedAt: at, request });
    this.record(
      request.by,
      'build-requested',
      `${id}${ahead.length ? ` (after ${ahead.join(', ')})` : ''}: ${request.message}`,
      at,
      buildContext(id, request),
    );
    return { buildId: id, ahead };
  }

  validateTag(input: { by: string; version?: string; name?: string }): void {
    checkUser('by', input.by);
    if (input.name !== undefined && this.state.tags[checkTag('name', input.name)]) {
      throw new InputError(
        'name',
        `a tag name not yet used (${input.name} is ${this.state.tags[input.name]!.version})`,
        input.name,
      );
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
        throw new InputError(
          'tag',
          `a tag with a passed test result to promote to gated channel ${input.channel} (${input.tag} has ${test ? 'a failed one' : 'none'}; --force --reason overrides)`,
          input.tag,
        );
      }
    }
  }

  /** The channel's current entry when it is this very promotion (the same request sent twice, or two at once). */
  alreadyPromoted(input: { tag: string; channel: string }): ChannelEntry | undefined {
    const current = this.state.channels[input.channel]?.at(-1);
    return current?.action === 'promote' && current.tag === input.tag ? current : undefined;
  }

  promote(
    input: { by: string; tag: string; channel: string; force?: boolean; reason?: string },
    at: string,
  ): ChannelEntry {
    const entry: ChannelEntry = {
      version: this.tagged(input.tag).version.id,
      tag: input.tag,
      at,
      by: input.by,
      action: 'promote',
    };
    if (input.reason) entry.reason = input.reason;
    if (input.force) entry.forced = true;
    (this.state.channels[input.channel] ??= []).push(entry);
    this.record(
      input.by,
      'promote',
      `${input.channel} -> ${input.tag} (${entry.version})${input.force ? ` forced: ${input.reason}` : ''}`,
      at,
    );
    return entry;
  }

  /** The entry a rollback returns to: the one before the current, skipping revoked versions. */
  previous(channel: string): ChannelEntry {
    const entries = this.state.channels[checkChannel('channel', channel)] ?? [];
    const current = entries.at(-1);
    const before = [...entries.slice(0, -1)]
      .reverse()
      .find(
        (e) => e.version !== current?.version && !this.version(e.version).revoked && !this.version(e.version).removed,
      );
    if (!before)
      throw new InputError(
        'channel',
        `a channel with an earlier entry to roll back to (${channel} has ${entries.length ? 'none usable' : 'no history'})`,
        channel,
      );
    return before;
  }

  validateRollback(input: { by: string; channel: string; reason?: string }): void {
    checkUser('by', input.by);
    if (input.reason !== undefined) checkReason('reason', input.reason);
    this.previous(input.channel);
  }

  rollback(input: { by: string; channel: string; reason?: string }, at: string): ChannelEntry {
    const to = this.previous(input.channel);
    const entry: ChannelEntry = {
      version: to.version,
      tag: to.tag,
      at,
      by: input.by,
      action: 'rollback',
      ...(input.reason ? { reason: input.reason } : {}),
    };
    this.state.channels[input.channel]!.push(entry);
    this.record(
      input.by,
      'rollback',
      `${input.channel} -> ${to.tag} (${to.version})${input.reason ? `: ${input.reason}` : ''}`,
      at,
    );
    return entry;
  }

  validateTestResult(input: TestResultInput): void {
    checkUser('by', input.by);
    this.tagged(input.tag);
    if (typeof input.passed !== 'boolean') throw new InputError('passed', 'true or false', input.passed);
    if (input.note !== undefined && (typeof input.note !== 'string' || input.note.length > TEXT_LIMITS.note))
      throw new InputError('note', `at most ${TEXT_LIMITS.note} characters`, input.note);
  }

  testResult(input: TestResultInput, at: string): TestResult {
    const result: TestResult = { passed: input.passed, at, by: input.by, ...(input.note ? { note: input.note } : {}) };
    this.state.tests[input.tag] = result;
    this.record(
      input.by,
      'test-result',
      `${input.tag} ${input.passed ? 'passed' : 'failed'}${input.note ? `: ${input.note}` : ''}`,
      at,
    );
    return result;
  }

  validateGate(input: { by: string; channels: string[] }): void {
    checkUser('by', input.by);
    if (!Array.isArray(input.channels) || input.channels.length > 32)
      throw new InputError('channels', 'a list of at most 32 channel names', input.channels);
    input.channels.forEach((c, i) => checkChannel(`channels[${i}]`, c));
  }

  gate(input: { by: string; channels: string[] }, at: string): string[] {
    this.state.gated = [...new Set(input.channels)].sort();
    this.record(input.by, 'gate', `gated: ${this.state.gated.join(', ') || 'none'}`, at);
    return this.state.gated;
  }

  /** How lineages revoked before revocation followed the lineage: a version revoked already is refused. */
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
      ...Object.entries(s.tags)
        .filter(([, t]) => t.version === id)
        .map(([name]) => `tag ${name}`),
      ...Object.entries(s.channels)
        .filter(([, e]) => e.at(-1)?.version === id)
        .map(([name]) => `channel ${name}`),
      ...Object.entries(s.packs!)
        .filter(([, p]) => p.version === id)
        .map(([name]) => `pack ${name}`),
      ...Object.entries(volumes)
        .filter(([, v]) => v === id)
        .map(([name]) => `volume ${name}`),
    ];
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

  /** The oldest entries, now in the archive, leave the state. */
  archived(entries: HistoryEntry[], done: ArchiveResult, chain: string): void {
    const throughSeq = entries.at(-1)!.seq;
    this.state.history = this.state.history.filter((e) => e.seq > throughSeq);
    this.state.archive = {
      chain,
      host: done.host,
      path: done.path,
      count: (this.state.archive?.count ?? 0) + entries.length,
      throughSeq,
    };
  }

  /** Removed versions whose full record is still in the state: the next to archive. */
  unarchived(): VersionRecord[] {
    return this.state.versions.filter((v): v is VersionRecord => !isStub(v) && Boolean(v.removed));
  }

  /** Versions the archive now holds leave a stub in the state; the archive counts them. */
  versionsArchived(done: VersionArchiveResult, chain: string): void {
    const archived = new Set(done.archived);
    this.state.versions = this.state.versions.map((v) =>
      !isStub(v) && v.removed && archived.has(v.id) ? stubOf({ ...v, removed: v.removed }) : v,
    );
    this.state.versionArchive = { chain, host: done.host, path: done.path, count: done.count };
  }
}

/** A version whose files are still stored (a stub is always of a removed one). */
export const isStored = (v: StoredVersion): v is VersionRecord => !v.removed;

/** A build's events name it, and reach the targets its request named. */
export function buildContext(id: string, request: BuildRequest): EventContext {
  return { build: id, ...(request.notify?.length ? { notify: request.notify } : {}) };
}
