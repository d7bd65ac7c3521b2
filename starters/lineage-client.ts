/**
 * The CLI's way to a lineage: start it on first use, send it validated updates, read it by query,
 * and say who is asking.
 */
import { randomUUID } from 'node:crypto';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { QueryDefinition, UpdateDefinition } from '@temporalio/common';
import { jsonBytes, PAYLOAD_LIMIT } from '../common/limits.js';
import {
  fromArchive,
  isStub,
  type HistoryEntry,
  type StoredVersion,
  type VersionRecord,
  type VersionStub,
} from '../common/lineage.js';
import { checkName, InputError } from '../common/names.js';
import { MAX_PAGE_LIMIT, pageWindow, type PageInfo, type PageRequest } from '../common/pages.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import type { VersionDiff } from '../activities/nas/diff.js';
import { diffWorkflow } from '../workflows/diff.js';
import {
  describeQuery,
  gateUpdate,
  gcUpdate,
  historyQuery,
  lineageWorkflowId,
  packUpdate,
  promoteUpdate,
  registerVersionUpdate,
  removeUpdate,
  resolveQuery,
  revokeUpdate,
  rollbackUpdate,
  standingQuery,
  stateQuery,
  tagsQuery,
  tagUpdate,
  testResultUpdate,
  versionQuery,
  versionsQuery,
  type GcInput,
  type HistoryArchive,
  type LineageInput,
  type LineageSummary,
  type LineageView,
  type ListedVersion,
  type TagsPage,
  type VersionsPage,
} from '../workflows/lineage/messages.js';
import { lineageArchivedVersionWorkflow } from '../workflows/lineage/archived-version-workflow.js';
import { lineageGcWorkflow } from '../workflows/lineage/gc-workflow.js';
import { lineageHistoryWorkflow } from '../workflows/lineage/history-workflow.js';
import { lineageWorkflow } from '../workflows/lineage/workflow.js';
import { type NewVersion } from '../common/lineage.js';
import { answered, sendUpdate, updated } from './answers.js';
import { sdk } from './sdk.js';

export { parseImageRef } from './image-refs.js';

export function lineageHandle(client: Client, image: string): WorkflowHandle<typeof lineageWorkflow> {
  return client.workflow.getHandle(lineageWorkflowId(image));
}

/**
 * Sends an update to the image's lineage, starting the lineage if this is its first request. A
 * lineage that ended without handing on its state (terminated, failed, timed out) is started again
 * from the state its last run holds, never empty.
 */
export async function updateLineage<Ret, Args extends unknown[]>(
  client: Client,
  image: string,
  update: UpdateDefinition<Ret, Args>,
  ...args: Args
): Promise<Ret> {
  const start = new sdk.WithStartWorkflowOperation(lineageWorkflow, {
    workflowId: lineageWorkflowId(image),
    taskQueue: WORKFLOW_QUEUE,
    args: [await startInput(client, image)],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [
      { key: SA.kind, value: 'lineage' },
      { key: SA.image, value: image },
    ],
    staticSummary: `Lineage of image ${image}: versions, tags, channels and their history`,
  });
  const result = await updated(client, `the lineage of ${image}`, WORKFLOW_QUEUE, () =>
    client.workflow.startUpdateWithStart(update, { args, startWorkflowOperation: start, waitForStage: 'ACCEPTED' }),
  );
  await ensureGcSchedule(client, image);
  return result;
}

/**
 * What the lineage starts from if it is not running: nothing for a new image; the state of the last
 * run when that run ended without continuing as new (a closed run still answers queries, replayed
 * from its history). When that state cannot be read back, or no longer fits in one payload, the
 * request is refused and nothing starts.
 */
const RECOVERY_WAIT_MS = 10_000;

async function startInput(client: Client, image: string): Promise<LineageInput> {
  let last;
  try {
    last = await lineageHandle(client, image).describe();
  } catch (err) {
    if (err instanceof sdk.WorkflowNotFoundError) return { image };
    throw err;
  }
  const status = last.status.name;
  if (status === 'RUNNING' || status === 'CONTINUED_AS_NEW') return { image };
  const ended = `the lineage of ${image} ended ${status}${last.closeTime ? ` at ${last.closeTime.toISOString()}` : ''} without handing on its state`;
  let state;
  try {
    const run = client.workflow.getHandle(lineageWorkflowId(image), last.runId);
    state = await client.connection.withDeadline(Date.now() + RECOVERY_WAIT_MS, () => run.query(stateQuery));
  } catch (err) {
    throw new Error(
      `${ended}, and its last run (${last.runId}) could not be read back within ${RECOVERY_WAIT_MS / 1000} s: ${(err as Error).message.split('\n')[0]}; nothing was started (a worker of role orchestrator must be running to replay it)`,
    );
  }
  const bytes = jsonBytes(state);
  if (bytes >= PAYLOAD_LIMIT)
    throw new Error(`${ended}, and its state (${bytes} bytes) is too large to start again from; nothing was started`);
  return { image, state, recoveredFrom: { runId: last.runId, status } };
}

export const gcScheduleId = (image: string) => `lineage-gc-${checkName('image', image)}`;

/** The image's daily retention run; one per image, so an existing schedule is left as it is. */
export async function ensureGcSchedule(client: Client, image: string): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: gcScheduleId(image),
      spec: { intervals: [{ every: '1d' }] },
      action: {
        type: 'startWorkflow',
        workflowType: lineageGcWorkflow,
        workflowId: gcScheduleId(image),
        taskQueue: WORKFLOW_QUEUE,
        args: [{ image }],
      },
      policies: { overlap: 'SKIP' },
      memo: { purpose: `daily retention of image ${image}` },
    });
  } catch (err) {
    if (!(err instanceof sdk.ScheduleAlreadyRunning)) throw err;
  }
}

/** The volumes cloned from the image's versions, as visibility lists the running volume workflows. */
export async function volumesOf(client: Client, image: string): Promise<{ volume: string; version: string }[]> {
  const found: { volume: string; version: string }[] = [];
  const query = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${checkName('image', image)}' AND ExecutionStatus = 'Running'`;
  for await (const wf of client.workflow.list({ query })) {
    const volume = wf.typedSearchAttributes.get(SA.volume);
    const version = wf.typedSearchAttributes.get(SA.version);
    if (volume && version) found.push({ volume, version });
  }
  return found;
}

/**
 * The task queue of each lineage a client has read, found once per client: a command that reads
 * several times (a ref resolved, then its record) asks the server for it once.
 */
const lineageQueues = new WeakMap<Client, Map<string, Promise<string>>>();

function lineageQueue(client: Client, image: string): Promise<string> {
  const known = lineageQueues.get(client) ?? new Map<string, Promise<string>>();
  lineageQueues.set(client, known);
  let queue = known.get(image);
  if (!queue) {
    queue = lineageHandle(client, image)
      .describe()
      .then((d) => d.taskQueue);
    // A failure (no such lineage yet) is not remembered: the next read asks again.
    queue.catch(() => known.delete(image));
    known.set(image, queue);
  }
  return queue;
}

/** A query of the image's lineage, or a one-line error when the image has none yet. */
async function queryLineage<R, A extends unknown[]>(
  client: Client,
  image: string,
  query: QueryDefinition<R, A>,
  ...args: A
): Promise<R> {
  try {
    const handle = lineageHandle(client, image);
    return await answered(client, `the lineage of ${image}`, () => handle.query(query, ...args), [
      await lineageQueue(client, image),
    ]);
  } catch (err) {
    if ((err as Error).name === 'WorkflowNotFoundError')
      throw new InputError('image', 'an image with at least one build (see imgflow build)', image);
    throw err;
  }
}

/** The lineage in brief (counts, channels, gates, packs, its newest versions and tags), or a one-line error when the image has none yet. */
export function describeLineage(client: Client, image: string): Promise<LineageSummary> {
  return queryLineage(client, image, describeQuery);
}

/** Where the given versions and every packed one stand on the lineage's channels (the fleet view). */
export function lineageStanding(client: Client, image: string, versions: string[]) {
  return queryLineage(client, image, standingQuery, versions);
}

/** A page of the image's versions (page 1 the newest), with the tags of each. */
export function lineageVersions(client: Client, image: string, page: PageRequest = {}): Promise<VersionsPage> {
  return queryLineage(client, image, versionsQuery, page);
}

/** A page of the image's tags (page 1 the newest), each with its test result. */
export function lineageTags(client: Client, image: string, page: PageRequest = {}): Promise<TagsPage> {
  return queryLineage(client, image, tagsQuery, page);
}

/**
 * Every page of a list, oldest first. The newest page is read first and fixes the list's length the
 * others are counted against: an item added meanwhile is neither repeated nor makes one missed.
 */
async function allPages<P extends PageInfo>(read: (page: PageRequest) => Promise<P>): Promise<P[]> {
  const first = await read({ limit: MAX_PAGE_LIMIT, page: 1 });
  const older: P[] = [];
  for (let page = first.pages; page > 1; page--)
    older.push(await read({ limit: MAX_PAGE_LIMIT, page, asOf: first.total }));
  return [...older, first];
}

/**
 * The whole lineage as listings show it, every version and tag, read a page at a time: for scripts
 * and checks that need all of it.
 */
export async function lineageView(client: Client, image: string): Promise<LineageView> {
  const summary = await describeLineage(client, image);
  const versions = (await allPages((p) => lineageVersions(client, image, p))).flatMap((p) => p.versions);
  const tagList = (await allPages((p) => lineageTags(client, image, p))).flatMap((p) => p.tags);
  const tags: LineageView['tags'] = {};
  const tests: LineageView['tests'] = {};
  for (const { name, test, ...tag } of tagList) {
    tags[name] = tag;
    if (test) tests[name] = test;
  }
  const { channels, gated, historyEntries, builds, packs, versionArchive } = summary;
  return {
    image,
    versions,
    tags,
    channels,
    tests,
    gated,
    historyEntries,
    builds,
    packs,
    ...(versionArchive ? { versionArchive } : {}),
  };
}

/** Archived entries asked for at a time (a page also stops at 1 MB). */
const ARCHIVE_PAGE = 5_000;

/**
 * The image's history, oldest first: all of it, or the newest `last` entries. The lineage holds
 * the newest entries; the older ones are in its archive on the control host, read a page at a time
 * through `lineageHistoryWorkflow`, so this works from any machine that reaches Temporal. The
 * query fixes which archived entries belong to the answer, so an archive that grows meanwhile
 * neither repeats nor drops any.
 */
export async function lineageHistory(client: Client, image: string, last?: number): Promise<HistoryEntry[]> {
  const { entries, archive } = await queryLineage(client, image, historyQuery, last === undefined ? {} : { last });
  const wanted = Math.min(archive?.count ?? 0, last === undefined ? Infinity : last - entries.length);
  const older =
    archive && wanted > 0 ? await readArchive(client, image, archive, archive.count - wanted, archive.count) : [];
  return [...older, ...entries];
}

/**
 * A page of the image's history (page 1 the newest entries), oldest first. The lineage answers with
 * the part of the page its state holds; what of the page is older comes from the archive.
 */
export async function lineageHistoryPage(
  client: Client,
  image: string,
  page: PageRequest = {},
): Promise<PageInfo & { entries: HistoryEntry[] }> {
  const view = await queryLineage(client, image, historyQuery, page);
  // A lineage that answers without a page predates paging: its entries are the state's, newest last.
  const info = view.page ?? pageWindow((view.archive?.count ?? 0) + view.entries.length, page);
  const { start, end } = pageWindow(info.total, info);
  const count = view.archive?.count ?? 0;
  const older =
    view.archive && start < count ? await readArchive(client, image, view.archive, start, Math.min(end, count)) : [];
  const entries = view.page ? view.entries : view.entries.slice(Math.max(0, start - count), Math.max(0, end - count));
  return { ...info, entries: [...older, ...entries] };
}

/** The archive's entries from `offset` to `end` (at most its end as the lineage counts it). */
async function readArchive(
  client: Client,
  image: string,
  archive: HistoryArchive,
  offset: number,
  end: number,
): Promise<HistoryEntry[]> {
  const read: HistoryEntry[] = [];
  while (offset + read.length < end) {
    const page = await client.workflow.execute(lineageHistoryWorkflow, {
      taskQueue: WORKFLOW_QUEUE,
      workflowId: `lineage-history-${image}-${randomUUID()}`,
      args: [
        {
          image,
          chain: archive.chain,
          offset: offset + read.length,
          throughSeq: archive.throughSeq,
          limit: Math.min(ARCHIVE_PAGE, end - offset - read.length),
        },
      ],
      typedSearchAttributes: [
        { key: SA.kind, value: 'lineage-history' },
        { key: SA.image, value: image },
      ],
      staticSummary: `Read archived history of image ${image}`,
    });
    if (!page.length)
      throw new Error(
        `the history archive of ${image} at ${archive.host}:${archive.path} holds ${offset + read.length} entries, its lineage counts ${archive.count}`,
      );
    read.push(...page);
  }
  return read;
}

/** A version as its lineage holds it, by version id or tag (the newest when absent): a removed version may be a stub. */
export async function storedVersion(client: Client, image: string, ref?: string): Promise<StoredVersion> {
  const { id } = await resolveVersion(client, image, ref);
  return queryLineage(client, image, versionQuery, id);
}

/** A version's full record, by version id or tag: a removed version's comes from its lineage's archive on the control host. */
export async function fullVersion(client: Client, image: string, ref?: string): Promise<VersionRecord> {
  const v = await storedVersion(client, image, ref);
  return isStub(v) ? archivedVersion(client, image, v) : v;
}

/** The archived record of a stubbed version, read as archived history is, with what the stub says changed since. */
async function archivedVersion(client: Client, image: string, stub: VersionStub): Promise<VersionRecord> {
  // The lineage records where its version archive is when it makes the first stub.
  const { versionArchive } = await describeLineage(client, image);
  const record = await client.workflow.execute(lineageArchivedVersionWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `lineage-version-${image}-${stub.id}-${randomUUID()}`,
    args: [{ image, chain: versionArchive!.chain, version: stub.id }],
    typedSearchAttributes: [
      { key: SA.kind, value: 'lineage-version' },
      { key: SA.image, value: image },
      { key: SA.version, value: stub.id },
    ],
    staticSummary: `Read archived record of ${image}:${stub.id}`,
  });
  return fromArchive(stub, record);
}

/** The version a ref names, as listings show it: a version id, a tag, or (no ref) the newest version. */
export async function resolveVersion(client: Client, image: string, ref?: string): Promise<ListedVersion> {
  const found = await queryLineage(client, image, resolveQuery, ref ? { ref } : {});
  if (found) return found;
  if (!ref) throw new InputError('image', 'an image with at least one version', image);
  const { counts, latest } = await describeLineage(client, image);
  throw new InputError(
    'version',
    `a version or tag of ${image} (${counts.versions ? `${counts.versions} versions, the newest ${latest.at(-1)!.id}; imgflow versions and imgflow tags list them` : 'versions none'})`,
    ref,
  );
}

/** A validated update to an image's lineage, which must exist: a bad request is refused before anything is recorded. */
function change<Ret, Input>(update: UpdateDefinition<Ret, [Input]>) {
  return (client: Client, image: string, input: Input): Promise<Ret> =>
    sendUpdate(client, lineageHandle(client, image), `the lineage of ${image}`, update, input);
}

export const tagVersion = change(tagUpdate);
export const promoteTag = change(promoteUpdate);
export const setGate = change(gateUpdate);
export const rollbackChannel = change(rollbackUpdate);
export const recordTestResult = change(testResultUpdate);
export const revokeVersion = change(revokeUpdate);
export const packTag = change(packUpdate);

/** Retention: the newest N and every version something refers to (the volumes cloned from it among them) stay. */
export async function collectGarbage(client: Client, image: string, input: Omit<GcInput, 'volumes'>) {
  return sendUpdate(client, lineageHandle(client, image), `the lineage of ${image}`, gcUpdate, {
    ...input,
    volumes: await volumesOf(client, image),
  });
}

/** Deletes a version (by id or tag), or with none every version, unless something still refers to it. */
export async function removeVersions(client: Client, image: string, by: string, which?: string) {
  const version = which ? (await resolveVersion(client, image, which)).id : undefined;
  return sendUpdate(client, lineageHandle(client, image), `the lineage of ${image}`, removeUpdate, {
    by,
    ...(version ? { version } : {}),
    volumes: await volumesOf(client, image),
  });
}

/** A version whose manifests are still stored: they went with a removed version's files. */
async function withManifests(client: Client, image: string, ref: string): Promise<VersionRecord> {
  const v = await storedVersion(client, image, ref);
  if (v.removed)
    throw new InputError(
      'version',
      `a stored version (${v.id} was removed by ${v.removed.by}: ${v.removed.reason})`,
      v.id,
    );
  // Only removed versions become stubs.
  return v as VersionRecord;
}

/** What changed between two versions (or tags) stored on one NAS: packages, files and size. */
export async function diffVersions(client: Client, image: string, a: string, b: string): Promise<VersionDiff> {
  const [from, to] = [await withManifests(client, image, a), await withManifests(client, image, b)];
  const host = from.artifacts[0]!.host;
  if (to.artifacts[0]!.host !== host)
    throw new InputError(
      'version',
      `versions stored on one NAS (${from.id} is on ${host}, ${to.id} on ${to.artifacts[0]!.host})`,
      to.id,
    );
  const side = (v: VersionRecord) => ({ id: v.id, bytes: v.bytes, manifests: v.manifests });
  return client.workflow.execute(diffWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `diff-${image}-${from.id}-${to.id}-${Date.now().toString(36)}`,
    args: [{ image, host, from: side(from), to: side(to) }],
    staticSummary: `Diff of ${image} ${from.id} -> ${to.id}`,
  });
}

/** A copy of a version's record as the first version of a new image, noting where it came from. */
function cloneRecord(v: VersionRecord, image: string, by: string): NewVersion {
  const copyable = ({ id: _id, revoked: _r, removed: _m, ...rest }: VersionRecord) => rest;
  return {
    ...copyable(v),
    by,
    message: `clone of ${image}:${v.id}`,
    origin: { image, version: v.id },
    provenance: { ...v.provenance, source: `clone of ${image}:${v.id} (${v.provenance.source})` },
  };
}

/**
 * Starts `newImage` with a copy of a version of `image` (default: the newest) as its first version.
 * A refused clone leaves nothing behind: the origin is tagged `originTag` only once the new image
 * is known to be new.
 */
export async function cloneImage(
  client: Client,
  image: string,
  newImage: string,
  originTag: string,
  by: string,
  ref?: string,
): Promise<VersionRecord> {
  const existing = await describeLineage(client, newImage).catch(() => undefined);
  if (existing?.counts.versions)
    throw new InputError(
      'new-image',
      `an image that does not exist yet (${newImage} has ${existing.counts.versions} versions)`,
      newImage,
    );
  const v = await fullVersion(client, image, ref);
  if (v.revoked)
    throw new InputError(
      'version',
      `a version that is not revoked (${v.id} was revoked by ${v.revoked.by}: ${v.revoked.reason}) to clone`,
      v.id,
    );
  if (v.removed)
    throw new InputError(
      'version',
      `a version whose files are still stored (${v.id} was removed by ${v.removed.by}: ${v.removed.reason}) to clone`,
      v.id,
    );
  // The clone shares the version's stored files: a tag on the origin keeps retention off them.
  await sendUpdate(client, lineageHandle(client, image), `the lineage of ${image}`, tagUpdate, {
    by,
    version: v.id,
    name: originTag,
  });
  return updateLineage(client, newImage, registerVersionUpdate, cloneRecord(v, image, by));
}
