/**
 * The contract of a lineage: its updates, signals and queries and the types they carry, what the
 * CLI imports to talk to it. The rules behind them are in lineage.ts, the wiring in workflow.ts.
 */
import type { EventEnvelope } from '../../common/events.js';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type {
  ChannelEntry,
  HistoryEntry,
  NewVersion,
  PackKind,
  PackRecord,
  StoredVersion,
  TagRecord,
  TestResult,
  VersionRecord,
  VersionStub,
} from '../../common/lineage.js';
import type { StateBudget } from '../../common/limits.js';
import { checkName } from '../../common/names.js';
import type { PageInfo, PageRequest } from '../../common/pages.js';
import type { BuildRequest } from '../build/messages.js';
import type {
  AncestorRevokedInput,
  AncestorRevokedOutcome,
  OriginRecord,
  RevocationPlan,
  RevokeInput,
  RevokeOutcome,
} from './revocation.js';
import type { LineageStanding } from './standing.js';

export type {
  AncestorRevokedInput,
  AncestorRevokedOutcome,
  ChannelRevocation,
  OriginRecord,
  RevocationPlan,
  RevokeInput,
  RevokeOutcome,
} from './revocation.js';

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
  /** Asked for a page: which one, of how many entries (archived ones included); `entries` are the state's part of it. */
  page?: PageInfo;
}

/**
 * What the history query is asked: the newest `last` entries the state holds (all when absent), or,
 * with `limit` or `page`, the state's part of that page of the whole history (archived entries
 * counted), the rest of the page being in the archive.
 */
export type HistoryRequest = { last?: number } & PageRequest;

export interface QueuedBuild {
  id: string;
  requestedAt: string;
  request: BuildRequest;
}

export interface LineageInput {
  image: string;
  state?: LineageState;
  /** Events the run before held back while it continued as new: this run sends them first. */
  events?: EventEnvelope[];
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

export const lineageWorkflowId = (image: string) => `lineage-${checkName('image', image)}`;

export const registerVersionUpdate = defineUpdate<VersionRecord, [NewVersion]>('registerVersion');
export const tagUpdate = defineUpdate<TagRecord & { name: string }, [{ by: string; version?: string; name?: string }]>(
  'tag',
);
export const promoteUpdate = defineUpdate<
  ChannelEntry,
  [{ by: string; tag: string; channel: string; force?: boolean; reason?: string }]
>('promote');
export const rollbackUpdate = defineUpdate<ChannelEntry, [{ by: string; channel: string; reason?: string }]>(
  'rollback',
);
export const testResultUpdate = defineUpdate<TestResult, [TestResultInput]>('testResult');
export const testResultSignal = defineSignal<[TestResultInput]>('testResult');
/** The channels whose promotions need a passed test result of the tag (prod when a lineage starts). */
export const gateUpdate = defineUpdate<string[], [{ by: string; channels: string[] }]>('gate');
/**
 * Revokes a version and, unless told to keep channels, rolls back each channel whose current entry
 * it is to its previous usable entry, in one step; a version revoked already changes nothing.
 */
export const revokeUpdate = defineUpdate<RevokeOutcome, [RevokeInput]>('revoke');
/** Marks a copy of a revoked version in another image (a clone, or a clone of one) as such. */
export const ancestorRevokedUpdate = defineUpdate<AncestorRevokedOutcome, [AncestorRevokedInput]>('ancestorRevoked');

export const gcUpdate = defineUpdate<GcResult, [GcInput]>('gc');
/** What the daily schedule sends (through `lineageGcWorkflow`): a gc with the lineage's own settings. */
export const gcSignal = defineSignal<[GcInput]>('gc');
export const removeUpdate = defineUpdate<{ removed: string[]; files: number }, [RemoveInput]>('remove');
export const packUpdate = defineUpdate<PackOutcome, [PackInput]>('pack');

export const requestBuildUpdate = defineUpdate<BuildTicket, [BuildRequest]>('requestBuild');
/** The lineage in brief: counts, channels, gates, packs, builds waiting, its newest versions and tags. */
export const describeQuery = defineQuery<LineageSummary>('describe');
/** A page of the versions as listings show them (page 1 the newest), with the tags of each. */
export const versionsQuery = defineQuery<VersionsPage, [PageRequest]>('versions');
/** A page of the tags (page 1 the newest), each with its test result. */
export const tagsQuery = defineQuery<TagsPage, [PageRequest]>('tags');
/** The version a ref names, as listings show it: a version id, a tag, or with none the newest; null when none is. */
export const resolveQuery = defineQuery<ListedVersion | null, [{ ref?: string }]>('resolve');
/** A version's full record, or the stub of a removed one whose record is archived. */
export const versionQuery = defineQuery<StoredVersion, [string]>('version');
export const historyQuery = defineQuery<HistoryView, [HistoryRequest]>('history');
/** The test result recorded for a tag, or null: what a rollout's gate waits on. */
export const testOfQuery = defineQuery<TestResult | null, [string]>('testOf');
/** The whole state: what a lineage that ended without handing it on is recovered from (a closed run still answers queries). */
export const stateQuery = defineQuery<LineageState>('state');
/** Where the given versions (and every packed one) stand: for the fleet view. */
export const standingQuery = defineQuery<LineageStanding, [string[]]>('standing');
/** What revoking a version would touch in this lineage, changing nothing (`imgflow revoke --dry-run`). */
export const revocationPlanQuery = defineQuery<RevocationPlan, [{ version: string; keepChannels?: boolean }]>(
  'revocationPlan',
);
/** The versions of this lineage that are copies of another image's version: where revocations follow. */
export const originsQuery = defineQuery<OriginRecord[]>('origins');

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

/** A version as listings show it: without its report, manifests and provenance; a removed one may be a stub. */
export type ListedVersion = Omit<VersionRecord, 'report' | 'manifests' | 'provenance'> | VersionStub;

/** A channel as listings show it: its current entry and how many it keeps. */
export interface ChannelView {
  current?: ChannelEntry;
  entries: number;
}

export interface QueuedBuildView {
  id: string;
  by: string;
  requestedAt: string;
}

/**
 * What `describe` answers: the lineage in brief, the same size whatever its age. The lists that grow
 * with it (versions, tags, history) are counted here and read a page at a time.
 */
export interface LineageSummary {
  image: string;
  counts: {
    versions: number;
    /** Versions whose files are still stored. */
    stored: number;
    removed: number;
    revoked: number;
    tags: number;
    tests: number;
    passed: number;
    packs: number;
    volumes: number;
  };
  /** The newest versions, oldest first. */
  latest: ListedVersion[];
  /** The newest tags, oldest first. */
  latestTags: (TagRecord & { name: string })[];
  channels: Record<string, ChannelView>;
  /** Channels whose promotions need a passed test result. */
  gated: string[];
  /** All of them, archived or not. */
  historyEntries: number;
  builds: QueuedBuildView[];
  packs: Record<string, PackRecord>;
  versionArchive?: VersionArchive;
}

/** Versions and tags `describe` shows of a lineage. */
export const SUMMARY_LATEST = 5;

export interface VersionsPage extends PageInfo {
  versions: ListedVersion[];
  /** The tags of the page's versions, by version id. */
  tags: Record<string, string[]>;
  builds: QueuedBuildView[];
}

export interface TagsPage extends PageInfo {
  tags: (TagRecord & { name: string; test?: TestResult })[];
}

/** The whole lineage as listings show it, read a page at a time (what `describe` answered before it was a summary). */
export interface LineageView {
  image: string;
  versions: ListedVersion[];
  tags: Record<string, TagRecord>;
  channels: Record<string, ChannelView>;
  tests: Record<string, TestResult>;
  gated: string[];
  historyEntries: number;
  builds: QueuedBuildView[];
  packs: Record<string, PackRecord>;
  versionArchive?: VersionArchive;
}
