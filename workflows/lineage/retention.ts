/** A lineage's retention rules: which stored versions gc keeps and why, and what remove may take. */
import { checkUser, type VersionRecord } from '../../common/lineage.js';
import { checkInt, checkName, InputError } from '../../common/names.js';
import { isStored, volumeMap, type Lineage } from './lineage.js';
import type { GcInput, RemoveInput } from './messages.js';

function checkVolumes(field: string, value: unknown): { volume: string; version: string }[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new InputError(field, 'a list of {volume, version}', value);
  return value.map((v: { volume?: unknown; version?: unknown }, i) => ({
    volume: checkName(`${field}[${i}].volume`, v?.volume),
    version: checkName(`${field}[${i}].version`, v?.version),
  }));
}

/** Retention: the newest `keep` stored versions and every referenced one stay; the rest go. */
export function retentionPlan(
  lineage: Lineage,
  keep: number,
  volumes: Record<string, string> = lineage.state.volumes!,
): { remove: VersionRecord[]; kept: { version: string; why: string[] }[] } {
  const stored = lineage.state.versions.filter(isStored);
  const newest = new Set(stored.slice(-keep).map((v) => v.id));
  const kept: { version: string; why: string[] }[] = [];
  const remove: VersionRecord[] = [];
  for (const v of stored) {
    const why = [...(newest.has(v.id) ? [`newest ${keep}`] : []), ...lineage.references(v.id, volumes)];
    if (why.length) kept.push({ version: v.id, why });
    else remove.push(v);
  }
  return { remove, kept };
}

export function validateGc(input: GcInput): void {
  checkUser('by', input.by);
  if (input.keep !== undefined) checkInt('keep', input.keep, 1, 10_000);
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean')
    throw new InputError('dryRun', 'true or false', input.dryRun);
  checkVolumes('volumes', input.volumes);
}

export function removalTargets(lineage: Lineage, input: RemoveInput): VersionRecord[] {
  checkUser('by', input.by);
  const volumes = checkVolumes('volumes', input.volumes);
  const one = input.version !== undefined ? lineage.version(input.version) : undefined;
  if (one?.removed)
    throw new InputError('version', `a stored version (${one.id} was removed ${one.removed.at})`, one.id);
  const targets = (one ? [one] : lineage.state.versions).filter(isStored);
  const known = volumes ? volumeMap(volumes) : lineage.state.volumes!;
  for (const v of targets) {
    const all = lineage.references(v.id, known);
    if (all.length)
      throw new InputError(
        input.version !== undefined ? 'version' : 'image',
        `something no longer referenced (${lineage.state.image}:${v.id} is still referenced by ${all.join(', ')})`,
        input.version ?? lineage.state.image,
      );
  }
  return targets;
}
