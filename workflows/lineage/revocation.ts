/**
 * A lineage's revocation rules: what revoking a version touches here (the channels whose current
 * entry it is, with the entry each rolls back to, its tags, packs and the volumes last heard of),
 * the revocation itself with its rollbacks in one step, and the mark a copy of a revoked version
 * (a clone into this image) receives.
 */
import {
  checkReason,
  checkUser,
  type AncestorRevoked,
  type PackKind,
  type VersionRecord,
} from '../../common/lineage.js';
import { checkName, InputError } from '../../common/names.js';
import type { Lineage } from './lineage.js';

export interface RevokeInput {
  by: string;
  version: string;
  reason: string;
  /** Leave the channels whose current entry is the version where they are. */
  keepChannels?: boolean;
}

/** What a revocation does to one channel whose current entry is the revoked version. */
export interface ChannelRevocation {
  channel: string;
  /** The tag of its current entry. */
  tag: string;
  /**
   * `rollback` to `to` (its previous usable entry, as `imgflow rollback` finds it); `keep` when
   * told to keep channels or the version was revoked already; `none-usable` when it has no usable
   * earlier entry: it is left as it is.
   */
  action: 'rollback' | 'keep' | 'none-usable';
  to?: { version: string; tag: string };
}

/** What revoking a version touches in its own lineage, computed before anything changes. */
export interface RevocationPlan {
  image: string;
  version: string;
  /** The version's revocation when it was revoked already: a revoke then changes nothing. */
  revoked?: NonNullable<VersionRecord['revoked']>;
  channels: ChannelRevocation[];
  tags: string[];
  packs: { name: string; kind: PackKind; host: string; path: string }[];
  /** Volumes running the version as the lineage last heard of them (its last gc or remove). */
  volumes: string[];
}

/** What the revoke update did: the plan it followed, and whether it changed anything. */
export interface RevokeOutcome extends RevocationPlan {
  revoked: NonNullable<VersionRecord['revoked']>;
  /** False when the version was revoked already: nothing was recorded. */
  changed: boolean;
}

/** A copy of a version (the first version of an image that began as a clone), and what marks it. */
export interface OriginRecord {
  version: string;
  origin: { image: string; version: string };
  ancestorRevoked?: AncestorRevoked;
}

export interface AncestorRevokedInput {
  by: string;
  /** The version of this lineage that is a copy of the revoked one. */
  version: string;
  ancestor: AncestorRevoked;
}

export interface AncestorRevokedOutcome {
  image: string;
  version: string;
  ancestorRevoked: AncestorRevoked;
  /** False when the version was marked already (by this ancestor or another): nothing was recorded. */
  changed: boolean;
}

export function checkRevokeInput(lineage: Lineage, input: RevokeInput): void {
  checkUser('by', input.by);
  checkReason('reason', input.reason);
  if (input.keepChannels !== undefined && typeof input.keepChannels !== 'boolean')
    throw new InputError('keepChannels', 'true or false', input.keepChannels);
  lineage.version(checkName('version', input.version));
}

/** What revoking `version` would touch; a version revoked already would change nothing. */
export function planRevocation(lineage: Lineage, input: { version: string; keepChannels?: boolean }): RevocationPlan {
  const s = lineage.state;
  const v = lineage.version(checkName('version', input.version));
  const channels = Object.entries(s.channels)
    .filter(([, entries]) => entries.at(-1)?.version === v.id)
    .map(([channel, entries]): ChannelRevocation => {
      const tag = entries.at(-1)!.tag;
      if (v.revoked || input.keepChannels) return { channel, tag, action: 'keep' };
      try {
        const to = lineage.previous(channel);
        return { channel, tag, action: 'rollback', to: { version: to.version, tag: to.tag } };
      } catch (err) {
        if (err instanceof InputError) return { channel, tag, action: 'none-usable' };
        throw err;
      }
    });
  return {
    image: s.image,
    version: v.id,
    ...(v.revoked ? { revoked: v.revoked } : {}),
    channels,
    tags: Object.entries(s.tags)
      .filter(([, t]) => t.version === v.id)
      .map(([name]) => name),
    packs: Object.entries(s.packs!)
      .filter(([, p]) => p.version === v.id)
      .map(([name, p]) => ({ name, kind: p.kind ?? 'netboot', host: p.host, path: p.path })),
    volumes: Object.entries(s.volumes!)
      .filter(([, version]) => version === v.id)
      .map(([name]) => name),
  };
}

/**
 * Revokes the version and rolls back each channel the plan rolls back, in one step: the history
 * records the revocation, then each rollback with the reason `revoked: <reason>`. A version
 * revoked already is left as it is, and the outcome says so.
 */
export function revokeVersion(lineage: Lineage, input: RevokeInput, at: string): RevokeOutcome {
  const plan = planRevocation(lineage, input);
  if (plan.revoked) return { ...plan, revoked: plan.revoked, changed: false };
  const revoked = lineage.revoke(input, at).revoked!;
  for (const c of plan.channels)
    if (c.action === 'rollback')
      lineage.rollback({ by: input.by, channel: c.channel, reason: `revoked: ${input.reason}` }, at);
  return { ...plan, revoked, changed: true };
}

/** The versions of this lineage that are copies of another image's version. */
export function originsOf(lineage: Lineage): OriginRecord[] {
  return lineage.state.versions
    .filter((v) => v.origin)
    .map((v) => ({
      version: v.id,
      origin: v.origin!,
      ...(v.ancestorRevoked ? { ancestorRevoked: v.ancestorRevoked } : {}),
    }));
}

const COPY = /^[^:]+:[^:]+$/;

/** A mark must name a copy: the version's origin is the revoked one, or the last copy in between. */
export function checkAncestorRevoked(lineage: Lineage, input: AncestorRevokedInput): void {
  checkUser('by', input.by);
  const v = lineage.version(checkName('version', input.version));
  const a = input.ancestor;
  if (typeof a !== 'object' || a === null) throw new InputError('ancestor', 'the revoked version', a);
  checkName('ancestor.image', a.image);
  checkName('ancestor.version', a.version);
  checkReason('ancestor.reason', a.reason);
  checkUser('ancestor.by', a.by);
  if (typeof a.at !== 'string' || Number.isNaN(Date.parse(a.at)))
    throw new InputError('ancestor.at', 'an ISO time', a.at);
  if (a.through !== undefined) {
    if (!Array.isArray(a.through) || a.through.length > 64)
      throw new InputError('ancestor.through', 'a list of at most 64 image:version', a.through);
    a.through.forEach((c, i) => {
      if (typeof c !== 'string' || !COPY.test(c)) throw new InputError(`ancestor.through[${i}]`, 'image:version', c);
      c.split(':').forEach((part) => checkName(`ancestor.through[${i}]`, part));
    });
  }
  const from = a.through?.at(-1) ?? `${a.image}:${a.version}`;
  const origin = v.origin && `${v.origin.image}:${v.origin.version}`;
  if (origin !== from)
    throw new InputError(
      'version',
      `a copy of ${from} (${lineage.state.image}:${v.id} is ${origin ? `a copy of ${origin}` : 'no copy'})`,
      v.id,
    );
}

/** Marks a copy of a revoked version; a copy marked already keeps its first mark. */
export function markAncestorRevoked(lineage: Lineage, input: AncestorRevokedInput, at: string): AncestorRevokedOutcome {
  const v = lineage.version(input.version);
  const base = { image: lineage.state.image, version: v.id };
  if (v.ancestorRevoked) return { ...base, ancestorRevoked: v.ancestorRevoked, changed: false };
  const a = input.ancestor;
  v.ancestorRevoked = {
    image: a.image,
    version: a.version,
    reason: a.reason,
    by: a.by,
    at: a.at,
    ...(a.through?.length ? { through: a.through } : {}),
  };
  lineage.record(
    input.by,
    'ancestor-revoked',
    `${v.id}: a copy of ${a.image}:${a.version}${a.through?.length ? ` (through ${a.through.join(', ')})` : ''}, revoked by ${a.by}: ${a.reason}`,
    at,
  );
  return { ...base, ancestorRevoked: v.ancestorRevoked, changed: true };
}
