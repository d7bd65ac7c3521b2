/**
 * What a volume is asked to map and set, and the checks of it: pure, shared by the volume
 * workflow's validators and the CLI.
 */
import { checkChannel, checkTag, checkUser } from './lineage.js';
import { checkHost, checkInt, checkName, checkSpeed, InputError } from './names.js';

/** The version a volume is cloned from, as the lineage records it (the CLI reads it there). */
export interface BaseVersion {
  image: string;
  version: string;
  /** The stored file on the NAS the volume is cloned from. */
  artifact: { format: string; host: string; path: string };
  revoked?: { reason: string; by: string; at: string };
  /** How the version was chosen, when not by its id: the fleet view compares it with where the channel is now. */
  channel?: string;
  tag?: string;
  pack?: string;
}

/** How a volume's version was chosen, when not by its id. */
export type VolumeOrigin = Pick<BaseVersion, 'channel' | 'tag' | 'pack'>;

export const originOf = ({ channel, tag, pack }: BaseVersion): VolumeOrigin | undefined =>
  channel !== undefined ? { channel } : tag !== undefined ? { tag } : pack !== undefined ? { pack } : undefined;

export interface MapRequest {
  by: string;
  base: BaseVersion;
  nas: string;
  computeHost: string;
  sizeBytes?: number;
  sync?: boolean;
  /** Seconds between pulls in sync mode. */
  frequencySeconds?: number;
  /** How long a host's worker may take to pick up a step before the map fails. */
  waitSeconds?: number;
  /** The pool names a client of an older system asked for (a Rocks frontend's zpool and remotepool): shown back to it as given. */
  pools?: { zpool?: string; remotepool?: string };
}

export interface VolumeAttrs {
  by: string;
  frequencySeconds?: number;
  /** Bytes per second: the limits of sync-mode transfers (upload: pulls to the NAS; download: the node's copy). */
  uploadSpeed?: number;
  downloadSpeed?: number;
  /** A frozen volume is skipped by scheduled pulls. */
  frozen?: boolean;
  /** Settings put back to their defaults: the default frequency, no speed limit. */
  reset?: ('frequency' | 'uploadSpeed' | 'downloadSpeed')[];
}

const MAX_BYTES = 64 * 1024 ** 4;

export function checkSizeBytes(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1024 ** 2 || value > MAX_BYTES) {
    throw new InputError(field, 'a size from 1 MiB to 64 TiB', value);
  }
  return value;
}

export function checkMapRequest(r: MapRequest): void {
  checkUser('by', r.by);
  checkBaseNames(r.base);
  checkHost('nas', r.nas);
  checkHost('compute host', r.computeHost);
  checkBaseStored(r.base, r.nas);
  if (r.sizeBytes !== undefined) checkSizeBytes('size', r.sizeBytes);
  if (r.frequencySeconds !== undefined) checkInt('frequency', r.frequencySeconds, 10, 86_400);
  if (r.waitSeconds !== undefined) checkInt('wait', r.waitSeconds, 1, 3600);
  if (r.pools?.zpool !== undefined) checkName('zpool', r.pools.zpool);
  if (r.pools?.remotepool !== undefined) checkName('remotepool', r.pools.remotepool);
}

/** The names a base carries: its image and version, and the channel, tag or pack it was chosen by. */
export function checkBaseNames(base: BaseVersion): void {
  checkName('image', base?.image);
  checkName('version', base?.version);
  if (base.channel !== undefined) checkChannel('channel', base.channel);
  if (base.tag !== undefined) checkTag('tag', base.tag);
  if (base.pack !== undefined) checkName('pack', base.pack);
}

/** A base a volume on `nas` can be cloned from: not revoked, stored there, a disk. */
export function checkBaseStored(base: BaseVersion, nas: string): void {
  if (base.revoked)
    throw new InputError(
      'version',
      `a version that is not revoked (${base.image}:${base.version} was revoked by ${base.revoked.by}: ${base.revoked.reason})`,
      base.version,
    );
  if (base.artifact?.host !== nas)
    throw new InputError(
      'nas',
      `the NAS storing ${base.image}:${base.version} (${base.artifact?.host ?? 'none'})`,
      nas,
    );
  if (!['qcow2', 'raw'].includes(base.artifact.format))
    throw new InputError('image', 'a version with a qcow2 or raw artifact', base.artifact.format);
}

const RESETTABLE = ['frequency', 'uploadSpeed', 'downloadSpeed'] as const;

export function checkAttrs(a: VolumeAttrs): void {
  checkUser('by', a.by);
  if (a.frequencySeconds !== undefined) checkInt('frequency', a.frequencySeconds, 10, 86_400);
  if (a.uploadSpeed !== undefined) checkSpeed('upload-speed', a.uploadSpeed);
  if (a.downloadSpeed !== undefined) checkSpeed('download-speed', a.downloadSpeed);
  if (a.frozen !== undefined && typeof a.frozen !== 'boolean')
    throw new InputError('frozen', 'true or false', a.frozen);
  if (a.reset !== undefined) {
    if (!Array.isArray(a.reset)) throw new InputError('reset', `a list of ${RESETTABLE.join(', ')}`, a.reset);
    for (const field of a.reset)
      if (!RESETTABLE.includes(field)) throw new InputError('reset', `one of ${RESETTABLE.join(', ')}`, field);
    const both = a.reset.find(
      (f) =>
        (f === 'frequency' ? a.frequencySeconds : f === 'uploadSpeed' ? a.uploadSpeed : a.downloadSpeed) !== undefined,
    );
    if (both) throw new InputError(both, 'a value or a reset, not both', both);
  }
}
