/**
 * What a staged rollout is asked, and the checks of it: pure, shared by the CLI and the rollout
 * workflow's validators. A rollout moves the members of one image's channel (its packs and the
 * volumes mapped from the channel) to a tag in waves, then points the channel at the tag.
 */
import { checkChannel, checkReason, checkTag, checkUser } from './lineage.js';
import { checkHost, checkInt, checkName, InputError } from './names.js';
import type { BaseVersion } from './volume.js';

/** Waves a rollout may have: enough for any sensible staging, few enough for a table. */
export const MAX_WAVES = 10;
/** Members one rollout may move: a site's fleet of one image, with its lists bounded. */
export const MAX_MEMBERS = 2000;
/** The longest pause between waves (a week), and the longest wait for a test result (the same). */
export const MAX_WAIT_SECONDS = 7 * 86_400;
export const DEFAULT_GATE_SECONDS = 86_400;

/** What is between two waves: nothing, a durable pause, or a passed test result of the tag recorded after the wave. */
export type Between = { kind: 'none' } | { kind: 'pause'; seconds: number } | { kind: 'gate'; timeoutSeconds: number };

/** A pack is moved by packing the tag under its name on its NAS; the previous directory is moved aside. */
export interface PackMember {
  kind: 'pack';
  name: string;
  host: string;
  packKind: 'netboot' | 'vm';
  from: { tag: string; version: string };
  to: { tag: string; version: string };
}

/** A volume is moved by staging the base of its next map: its running disk is never touched. */
export interface VolumeMember {
  kind: 'volume';
  name: string;
  host: string;
  from: BaseVersion;
  to: BaseVersion;
}

export type Member = PackMember | VolumeMember;

export interface RolloutRequest {
  by: string;
  image: string;
  channel: string;
  tag: string;
  /** The tag's version, as the lineage resolved it when the rollout was asked. */
  version: string;
  /** Cumulative percentages of the members moved by the end of each wave; the last is 100. */
  waves: number[];
  between: Between;
  members: Member[];
  /** Promote to a gated channel without a passed test result (as `imgflow promote --force`). */
  force?: boolean;
  reason?: string;
}

const WAVE = /^(\d{1,3})%?$/;

/** `10%,50%,100%` as the cumulative percentages it names, checked: increasing, each 1-100, the last 100. */
export function parseWaves(field: string, text: unknown): number[] {
  if (typeof text !== 'string' || text.length > 64)
    throw new InputError(field, 'a list such as 10%,50%,100% (at most 64 characters)', text);
  const parts = text.split(',').map((p) => p.trim());
  const waves = parts.map((p) => {
    const m = WAVE.exec(p);
    if (!m) throw new InputError(field, 'percentages such as 10%,50%,100%', text);
    return Number(m[1]);
  });
  return checkWaves(field, waves);
}

export function checkWaves(field: string, waves: unknown): number[] {
  if (!Array.isArray(waves) || waves.length < 1 || waves.length > MAX_WAVES)
    throw new InputError(field, `1 to ${MAX_WAVES} waves`, waves);
  waves.forEach((w, i) => {
    if (!Number.isInteger(w) || (w as number) < 1 || (w as number) > 100)
      throw new InputError(field, `each wave a whole percentage from 1% to 100% (wave ${i + 1})`, waves);
    if (i > 0 && (w as number) <= (waves[i - 1] as number))
      throw new InputError(field, `increasing percentages (wave ${i + 1} is not above wave ${i})`, waves);
  });
  if (waves.at(-1) !== 100) throw new InputError(field, 'a last wave of 100%', waves);
  return waves as number[];
}

export function checkBetween(b: Between): Between {
  switch (b?.kind) {
    case 'none':
      return b;
    case 'pause':
      checkInt('pause', b.seconds, 1, MAX_WAIT_SECONDS);
      return b;
    case 'gate':
      checkInt('gate-timeout', b.timeoutSeconds, 1, MAX_WAIT_SECONDS);
      return b;
    default:
      throw new InputError('between', 'none, a pause or a test-result gate', (b as { kind?: unknown })?.kind);
  }
}

function checkBase(field: string, b: BaseVersion, image: string): void {
  if (b?.image !== image) throw new InputError(`${field}.image`, image, b?.image);
  checkName(`${field}.version`, b.version);
  checkHost(`${field}.artifact.host`, b.artifact?.host);
  if (!['qcow2', 'raw'].includes(b.artifact?.format))
    throw new InputError(`${field}.artifact.format`, 'qcow2 or raw', b.artifact?.format);
  if (typeof b.artifact.path !== 'string' || b.artifact.path.length > 4096 || !b.artifact.path.startsWith('/'))
    throw new InputError(`${field}.artifact.path`, 'an absolute path', b.artifact.path);
}

export function checkMember(field: string, m: Member, r: Pick<RolloutRequest, 'image' | 'tag' | 'version'>): Member {
  checkName(`${field}.name`, m?.name);
  checkHost(`${field}.host`, m.host);
  if (m.kind === 'pack') {
    if (m.packKind !== 'netboot' && m.packKind !== 'vm')
      throw new InputError(`${field}.packKind`, 'netboot or vm', m.packKind);
    checkTag(`${field}.from.tag`, m.from?.tag);
    checkName(`${field}.from.version`, m.from.version);
    if (m.to?.tag !== r.tag || m.to.version !== r.version)
      throw new InputError(`${field}.to`, `${r.tag} (${r.version})`, m.to);
    return m;
  }
  if (m.kind === 'volume') {
    checkBase(`${field}.from`, m.from, r.image);
    checkBase(`${field}.to`, m.to, r.image);
    if (m.to.version !== r.version) throw new InputError(`${field}.to.version`, r.version, m.to.version);
    return m;
  }
  throw new InputError(`${field}.kind`, 'pack or volume', (m as { kind?: unknown })?.kind);
}

/** The whole request, as the CLI checks it before it starts anything and the workflow again when it starts. */
export function checkRolloutRequest(r: RolloutRequest): RolloutRequest {
  checkUser('by', r?.by);
  checkName('image', r.image);
  checkChannel('channel', r.channel);
  checkTag('tag', r.tag);
  checkName('version', r.version);
  checkWaves('waves', r.waves);
  checkBetween(r.between);
  if (r.force || r.reason !== undefined) checkReason('reason', r.reason);
  if (!Array.isArray(r.members) || r.members.length > MAX_MEMBERS)
    throw new InputError('members', `a list of at most ${MAX_MEMBERS} packs and volumes`, r.members?.length);
  const seen = new Set<string>();
  r.members.forEach((m, i) => {
    checkMember(`members[${i}]`, m, r);
    const key = `${m.kind} ${m.name}`;
    if (seen.has(key)) throw new InputError(`members[${i}]`, `each ${m.kind} once`, m.name);
    seen.add(key);
  });
  return r;
}

/** The one rollout of an image's channel: a second while it runs is refused ("@" is in neither name, so no two pairs share an id). */
export const rolloutWorkflowId = (image: string, channel: string) =>
  `rollout-${checkName('image', image)}@${checkChannel('channel', channel)}`;
