/**
 * The lineage of one image: the single source of truth for its versions, tags, channels and
 * history. It changes only through validated Updates (a bad request is rejected before it enters
 * history), is read through Queries, and continues as new before its history grows large.
 * Every handler is synchronous, so handlers never interleave.
 */
import { ApplicationFailure, allHandlersFinished, condition, continueAsNew, executeChild, defineQuery, defineSignal, defineUpdate, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { checkReason, checkTag, checkUser, defaultTagName, type ChannelEntry, type HistoryEntry, type TagRecord, type TestResult, type VersionRecord } from '../common/lineage.js';
import { checkName, InputError } from '../common/names.js';
import { SA } from '../common/search-attributes.js';
import { buildWorkflow, type BuildRequest } from './build.js';

export interface LineageState {
  image: string;
  versions: VersionRecord[];
  tags: Record<string, TagRecord>;
  channels: Record<string, ChannelEntry[]>;
  tests: Record<string, TestResult>;
  /** Channels that need a passed test result of the tag before a promotion. */
  gated: string[];
  history: HistoryEntry[];
  seq: number;
  /** Builds waiting their turn; the first is the one running. */
  builds: QueuedBuild[];
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
}

export type NewVersion = Omit<VersionRecord, 'id' | 'revoked'>;

export const lineageWorkflowId = (image: string) => `lineage-${checkName('image', image)}`;

export const registerVersionUpdate = defineUpdate<VersionRecord, [NewVersion]>('registerVersion');
export const tagUpdate = defineUpdate<TagRecord & { name: string }, [{ by: string; version?: string; name?: string }]>('tag');
export const promoteUpdate = defineUpdate<ChannelEntry, [{ by: string; tag: string; channel: string; force?: boolean; reason?: string }]>('promote');
export const rollbackUpdate = defineUpdate<ChannelEntry, [{ by: string; channel: string; reason?: string }]>('rollback');
export const testResultUpdate = defineUpdate<TestResult, [TestResultInput]>('testResult');
export const testResultSignal = defineSignal<[TestResultInput]>('testResult');
export const revokeUpdate = defineUpdate<VersionRecord, [{ by: string; version: string; reason: string }]>('revoke');

export const requestBuildUpdate = defineUpdate<BuildTicket, [BuildRequest]>('requestBuild');
export const describeQuery = defineQuery<LineageView>('describe');
export const versionQuery = defineQuery<VersionRecord, [string]>('version');
export const historyQuery = defineQuery<HistoryEntry[], [{ last?: number }]>('history');

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
  versions: Omit<VersionRecord, 'report' | 'manifests' | 'provenance'>[];
  tags: Record<string, TagRecord>;
  channels: Record<string, { current?: ChannelEntry; entries: number }>;
  tests: Record<string, TestResult>;
  historyEntries: number;
  builds: { id: string; by: string; requestedAt: string }[];
}

const CHANNEL = /^[a-z][a-z0-9-]{0,31}$/;

export function checkChannel(field: string, value: unknown): string {
  if (typeof value !== 'string' || !CHANNEL.test(value)) throw new InputError(field, 'a channel name of 1-32 lower-case letters, digits or "-"', value);
  return value;
}

export function newLineageState(image: string): LineageState {
  return { image: checkName('image', image), versions: [], tags: {}, channels: {}, tests: {}, gated: ['prod'], history: [], seq: 0, builds: [] };
}

/** The rules of a lineage, as pure functions of its state: the workflow only wires them up. */
export class Lineage {
  constructor(readonly state: LineageState) {}

  version(id: string): VersionRecord {
    const v = this.state.versions.find((x) => x.id === id);
    if (!v) throw new InputError('version', `a version of ${this.state.image} (${this.state.versions.map((x) => x.id).join(', ') || 'none yet'})`, id);
    return v;
  }

  tagged(tag: string): { tag: TagRecord; version: VersionRecord } {
    const t = this.state.tags[checkTag('tag', tag)];
    if (!t) throw new InputError('tag', `a tag of ${this.state.image}`, tag);
    return { tag: t, version: this.version(t.version) };
  }

  usable(v: VersionRecord, action: string): VersionRecord {
    if (v.revoked) throw new InputError('version', `a version that is not revoked (${v.id} was revoked by ${v.revoked.by}: ${v.revoked.reason}) to ${action}`, v.id);
    return v;
  }

  latest(): VersionRecord {
    const v = [...this.state.versions].reverse().find((x) => !x.revoked);
    if (!v) throw new InputError('version', `a built version of ${this.state.image}`, undefined);
    return v;
  }

  record(by: string, op: string, detail: string, at: string): void {
    this.state.history.push({ seq: ++this.state.seq, at, by, op, detail });
  }

  nextVersionId(): string {
    return `v${this.state.versions.length + 1}`;
  }

  validateRegister(v: NewVersion): void {
    checkUser('by', v.by);
    if (!v.artifacts.length) throw new InputError('artifacts', 'at least one verified artifact', v.artifacts);
  }

  register(v: NewVersion, at: string): VersionRecord {
    const record: VersionRecord = { ...v, id: this.nextVersionId() };
    this.state.versions.push(record);
    this.record(v.by, 'register', `${record.id} (${record.artifacts.map((a) => `${a.format} ${a.sha256.slice(0, 12)}`).join(', ')}): ${v.message}`, at);
    return record;
  }

  validateBuild(request: BuildRequest): void {
    checkUser('by', request.by);
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
    this.usable(this.tagged(input.tag).version, 'promote');
    if (input.force) {
      checkReason('reason', input.reason);
      return;
    }
    if (this.state.gated.includes(input.channel)) {
      const test = this.state.tests[input.tag];
      if (!test?.passed) {
        throw new InputError('tag', `a tag with a passed test result to promote to gated channel ${input.channel} (${input.tag} has ${test ? 'a failed one' : 'none'}; --force --reason overrides)`, input.tag);
      }
    }
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
    const before = [...entries.slice(0, -1)].reverse().find((e) => e.version !== current?.version && !this.version(e.version).revoked);
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
    if (input.note !== undefined && (typeof input.note !== 'string' || input.note.length > 500)) throw new InputError('note', 'at most 500 characters', input.note);
  }

  testResult(input: TestResultInput, at: string): TestResult {
    const result: TestResult = { passed: input.passed, at, by: input.by, ...(input.note ? { note: input.note } : {}) };
    this.state.tests[input.tag] = result;
    this.record(input.by, 'test-result', `${input.tag} ${input.passed ? 'passed' : 'failed'}${input.note ? `: ${input.note}` : ''}`, at);
    return result;
  }

  validateRevoke(input: { by: string; version: string; reason: string }): void {
    checkUser('by', input.by);
    checkReason('reason', input.reason);
    const v = this.version(input.version);
    if (v.revoked) throw new InputError('version', 'a version not yet revoked', input.version);
  }

  revoke(input: { by: string; version: string; reason: string }, at: string): VersionRecord {
    const v = this.version(input.version);
    v.revoked = { reason: input.reason, by: input.by, at };
    this.record(input.by, 'revoke', `${v.id}: ${input.reason}`, at);
    return v;
  }

  view(): LineageView {
    const s = this.state;
    return {
      image: s.image,
      versions: s.versions.map(({ report: _r, manifests: _m, provenance: _p, ...rest }) => rest),
      tags: s.tags,
      channels: Object.fromEntries(Object.entries(s.channels).map(([name, entries]) => [name, { current: entries.at(-1), entries: entries.length }])),
      tests: s.tests,
      historyEntries: s.history.length,
      builds: s.builds.map((b) => ({ id: b.id, by: b.request.by, requestedAt: b.requestedAt })),
    };
  }
}

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
    const failure = err as Error & { cause?: Error };
    lineage.record(queued.request.by, 'build-failed', `${queued.id}: ${failure.cause?.message ?? failure.message}`, new Date().toISOString());
  }
}

/** Validator and handler for one update: the validator rejects before anything is written. */
function handle<I, O>(lineage: Lineage, def: ReturnType<typeof defineUpdate<O, [I]>>, validate: (i: I) => void, apply: (i: I, at: string) => O, after: () => void) {
  setHandler(
    def,
    (input: I) => {
      try {
        const result = apply(input, new Date().toISOString());
        after();
        return result;
      } catch (err) {
        // Fails this update only; any other error thrown here would fail the workflow task.
        throw ApplicationFailure.nonRetryable((err as Error).message, (err as Error).name);
      }
    },
    { validator: (input: I) => validate(input) },
  );
}

export async function lineageWorkflow(input: LineageInput): Promise<void> {
  const lineage = new Lineage(input.state ?? newLineageState(input.image));
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  const publish = () =>
    upsertSearchAttributes([
      { key: SA.kind, value: 'lineage' },
      { key: SA.image, value: lineage.state.image },
      { key: SA.channels, value: Object.entries(lineage.state.channels).map(([name, entries]) => `${name}=${entries.at(-1)?.tag ?? ''}`) },
      ...(lineage.state.versions.length ? [{ key: SA.version, value: lineage.state.versions.at(-1)!.id }] : []),
    ]);
  publish();

  handle(lineage, registerVersionUpdate, (v) => lineage.validateRegister(v), (v, at) => lineage.register(v, at), publish);
  handle(lineage, tagUpdate, (i) => lineage.validateTag(i), (i, at) => lineage.tag(i, at), publish);
  handle(lineage, promoteUpdate, (i) => lineage.validatePromote(i), (i, at) => lineage.promote(i, at), publish);
  handle(lineage, rollbackUpdate, (i) => lineage.validateRollback(i), (i, at) => lineage.rollback(i, at), publish);
  handle(lineage, testResultUpdate, (i) => lineage.validateTestResult(i), (i, at) => lineage.testResult(i, at), publish);
  handle(lineage, revokeUpdate, (i) => lineage.validateRevoke(i), (i, at) => lineage.revoke(i, at), publish);
  // Other systems (a CI job that booted a test node) report by signal; a bad one is dropped and recorded.
  setHandler(testResultSignal, (i) => {
    const at = new Date().toISOString();
    try {
      lineage.validateTestResult(i);
      lineage.testResult(i, at);
    } catch (err) {
      lineage.record(typeof i?.by === 'string' ? i.by : 'unknown', 'rejected-signal', `testResult: ${(err as Error).message}`, at);
    }
  });
  setHandler(describeQuery, () => lineage.view());
  setHandler(versionQuery, (id) => lineage.version(id));
  setHandler(historyQuery, ({ last }) => lineage.state.history.slice(-(last ?? lineage.state.history.length)));

  handle(lineage, requestBuildUpdate, (r) => lineage.validateBuild(r), (r, at) => lineage.enqueueBuild(r, at), publish);

  const historyFull = () => workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > maxHistory;
  // One build at a time per image, in the order asked; continue as new only between builds.
  for (;;) {
    await condition(() => lineage.state.builds.length > 0 || historyFull());
    const next = lineage.state.builds[0];
    if (!next) break;
    await runBuild(lineage, next);
    lineage.state.builds.shift();
    publish();
  }
  await condition(allHandlersFinished);
  await continueAsNew<typeof lineageWorkflow>({ ...input, state: lineage.state });
}
