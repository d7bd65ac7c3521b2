/**
 * Where a lineage's versions stand, for the fleet view: on which channels each is current, which
 * channels carried it and moved on, its tags, and whether it was revoked or removed. Read from the
 * whole channel record, so a version superseded twice over is still known as superseded.
 */
import type { PackRecord, VersionRecord } from '../../common/lineage.js';
import { checkName, InputError } from '../../common/names.js';
import type { LineageState } from './messages.js';

export interface VersionStanding {
  version: string;
  /** False for a version this lineage never had. */
  known: boolean;
  /** Channels whose current entry is this version. */
  currentOn: string[];
  /** Channels that carried this version and carry another now. */
  supersededOn: { channel: string; now: string }[];
  tags: string[];
  revoked?: VersionRecord['revoked'];
  removed?: VersionRecord['removed'];
  /** The version is a copy of a revoked one (a clone into this image). */
  ancestorRevoked?: VersionRecord['ancestorRevoked'];
}

export interface LineageStanding {
  image: string;
  packs: Record<string, PackRecord>;
  /** The versions asked about and every packed one. */
  versions: VersionStanding[];
}

/** Versions one question may ask about: a fleet's worth, not an unbounded list. */
export const MAX_STANDING_VERSIONS = 5000;

export function checkVersionIds(ids: unknown): string[] {
  if (!Array.isArray(ids) || ids.length > MAX_STANDING_VERSIONS)
    throw new InputError('versions', `a list of at most ${MAX_STANDING_VERSIONS} version ids`, ids);
  return ids.map((id, i) => checkName(`versions[${i}]`, id));
}

export function standing(state: LineageState, ids: readonly string[]): LineageStanding {
  const packs = state.packs ?? {};
  const wanted = [...new Set([...ids, ...Object.values(packs).map((p) => p.version)])].sort();
  const channels = Object.entries(state.channels);
  const versions = wanted.map((id): VersionStanding => {
    const record = state.versions.find((v) => v.id === id);
    return {
      version: id,
      known: record !== undefined,
      currentOn: channels.filter(([, entries]) => entries.at(-1)?.version === id).map(([name]) => name),
      supersededOn: channels
        .filter(([, entries]) => entries.at(-1)?.version !== id && entries.some((e) => e.version === id))
        .map(([channel, entries]) => ({ channel, now: entries.at(-1)!.version })),
      tags: Object.entries(state.tags)
        .filter(([, t]) => t.version === id)
        .map(([name]) => name),
      ...(record?.revoked ? { revoked: record.revoked } : {}),
      ...(record?.removed ? { removed: record.removed } : {}),
      ...(record?.ancestorRevoked ? { ancestorRevoked: record.ancestorRevoked } : {}),
    };
  });
  return { image: state.image, packs, versions };
}
