/**
 * What a lineage answers when asked: its summary, a page of versions, tags or history, and the
 * version a ref names. Read-only functions of the state, sized for a person however large it grows.
 */
import { isStub, type StoredVersion, type VersionRecord } from '../../common/lineage.js';
import { pageOf, pageWindow, type PageRequest } from '../../common/pages.js';
import {
  SUMMARY_LATEST,
  type HistoryRequest,
  type HistoryView,
  type LineageState,
  type LineageSummary,
  type ListedVersion,
  type QueuedBuildView,
  type TagsPage,
  type VersionsPage,
} from './messages.js';

/**
 * The newest `last` entries in the state (all when absent), and where the older ones are; or, asked
 * for a page, the state's part of that page of the whole history, archived entries counted.
 */
export function historyView(state: LineageState, request: HistoryRequest = {}): HistoryView {
  const archive = state.archive ? { archive: state.archive } : {};
  const { last, limit, page } = request;
  if (limit === undefined && page === undefined) {
    const entries = last === undefined ? state.history : last > 0 ? state.history.slice(-last) : [];
    return { entries, ...archive };
  }
  const archived = state.archive?.count ?? 0;
  const { start, end, ...info } = pageWindow(archived + state.history.length, { limit, page });
  const entries = state.history.slice(Math.max(0, start - archived), Math.max(0, end - archived));
  return { entries, ...archive, page: info };
}

/** The lineage in brief: what `describe` answers, the same size however many versions, tags and entries it holds. */
export function summary(state: LineageState): LineageSummary {
  const s = state;
  const tags = Object.keys(s.tags);
  const tests = Object.values(s.tests);
  let [removed, revoked] = [0, 0];
  for (const v of s.versions) {
    if (v.removed) removed++;
    if (v.revoked) revoked++;
  }
  return {
    image: s.image,
    counts: {
      versions: s.versions.length,
      stored: s.versions.length - removed,
      removed,
      revoked,
      tags: tags.length,
      tests: tests.length,
      passed: tests.filter((t) => t.passed).length,
      packs: Object.keys(s.packs!).length,
      volumes: Object.keys(s.volumes!).length,
    },
    latest: s.versions.slice(-SUMMARY_LATEST).map(listed),
    latestTags: tags.slice(-SUMMARY_LATEST).map((name) => ({ name, ...s.tags[name]! })),
    channels: channelViews(state),
    gated: s.gated,
    historyEntries: (s.archive?.count ?? 0) + s.history.length,
    builds: buildViews(state),
    packs: s.packs!,
    ...(s.versionArchive ? { versionArchive: s.versionArchive } : {}),
  };
}

/** A page of the versions as listings show them, and the tags of each. */
export function versionsPage(state: LineageState, request: PageRequest): VersionsPage {
  const { items, info } = pageOf(state.versions, request);
  const ids = new Set(items.map((v) => v.id));
  const tags: Record<string, string[]> = {};
  for (const [name, t] of Object.entries(state.tags)) if (ids.has(t.version)) (tags[t.version] ??= []).push(name);
  return { versions: items.map(listed), tags, builds: buildViews(state), ...info };
}

/** A page of the tags, oldest first, each with its test result. */
export function tagsPage(state: LineageState, request: PageRequest): TagsPage {
  const { items, info } = pageOf(Object.keys(state.tags), request);
  const tags = items.map((name) => {
    const test = state.tests[name];
    return { name, ...state.tags[name]!, ...(test ? { test } : {}) };
  });
  return { tags, ...info };
}

/** The version a ref names (a version id, then a tag; the newest with none), as listings show it. */
export function resolveRef(state: LineageState, ref: string | undefined): ListedVersion | null {
  const s = state;
  const tag = ref !== undefined && Object.hasOwn(s.tags, ref) ? s.tags[ref] : undefined;
  const id = ref === undefined ? s.versions.at(-1)?.id : s.versions.some((v) => v.id === ref) ? ref : tag?.version;
  const v = id === undefined ? undefined : s.versions.find((x) => x.id === id);
  return v ? listed(v) : null;
}

function channelViews(state: LineageState): LineageSummary['channels'] {
  return Object.fromEntries(
    Object.entries(state.channels).map(([name, entries]) => [
      name,
      { current: entries.at(-1), entries: entries.length },
    ]),
  );
}

function buildViews(state: LineageState): QueuedBuildView[] {
  return state.builds.map((b) => ({ id: b.id, by: b.request.by, requestedAt: b.requestedAt }));
}

/** A version as listings show it: without its report, manifests and provenance (a stub has none). */
const withoutRecords = ({ report: _r, manifests: _m, provenance: _p, ...rest }: VersionRecord): ListedVersion => rest;
const listed = (v: StoredVersion): ListedVersion => (isStub(v) ? v : withoutRecords(v));
