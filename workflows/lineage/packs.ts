/** A lineage's pack rules: what a tag publishes under a name, and the record it leaves. */
import type { PackResult } from '../../activities/nas/pack.js';
import {
  checkPackKind,
  checkUser,
  packNote,
  type Artifact,
  type PackKind,
  type PackRecord,
  type VersionRecord,
} from '../../common/lineage.js';
import { checkInt, checkName, InputError } from '../../common/names.js';
import type { Lineage } from './lineage.js';
import { DEFAULT_MAX_ROOT_BYTES, type PackInput } from './messages.js';

/** The version, the name, and what gets published: its squashfs for netboot, its qcow2 (else raw) for a VM base. */
export function planPack(
  lineage: Lineage,
  input: PackInput,
): { version: VersionRecord; name: string; kind: PackKind; root: Artifact } {
  checkUser('by', input.by);
  const version = lineage.usable(lineage.tagged(input.tag).version, 'pack');
  const name = checkName('as', input.as ?? lineage.state.image);
  const cap =
    input.maxRootBytes === undefined
      ? DEFAULT_MAX_ROOT_BYTES
      : checkInt('maxRootBytes', input.maxRootBytes, 1, Number.MAX_SAFE_INTEGER);
  const squash = version.artifacts.find((a) => a.format === 'squashfs');
  const disk = version.artifacts.find((a) => a.format === 'qcow2') ?? version.artifacts.find((a) => a.format === 'raw');
  const kind = input.kind === undefined ? (squash ? 'netboot' : 'vm') : checkPackKind('kind', input.kind);
  const root = kind === 'netboot' ? squash : disk;
  if (!root)
    throw new InputError(
      'kind',
      `a kind ${version.id} can be packed as (it has ${version.artifacts.map((a) => a.format).join(', ')}: netboot needs squashfs, vm qcow2 or raw)`,
      kind,
    );
  // One name, one kind: a boot directory and a VM base under one name would leave one unrecorded.
  const existing = lineage.state.packs![name];
  const taken = existing && (existing.kind ?? 'netboot');
  if (taken && taken !== kind)
    throw new InputError(
      'as',
      `a name free for a ${kind} pack (${name} is a ${taken} pack of ${lineage.state.image})`,
      name,
    );
  if (root.bytes > cap)
    throw new InputError(
      'tag',
      `a version whose root image fits the cap of ${cap} bytes (${version.id}'s ${root.format} is ${root.bytes})`,
      input.tag,
    );
  return { version, name, kind, root };
}

export function recordPack(
  lineage: Lineage,
  input: PackInput,
  name: string,
  version: VersionRecord,
  kind: PackKind,
  done: PackResult,
  at: string,
): PackRecord {
  const record: PackRecord = {
    version: version.id,
    tag: input.tag,
    at,
    by: input.by,
    kind,
    host: done.host,
    path: done.path,
    ...(done.format ? { format: done.format } : {}),
    ...(done.kernel ? { kernel: done.kernel } : {}),
    ...(done.initrd ? { initrd: done.initrd } : {}),
  };
  lineage.state.packs![name] = record;
  const note = packNote(record);
  lineage.record(
    input.by,
    'pack',
    `${name} -> ${input.tag} (${version.id}) as ${kind} at ${done.host}:${done.path}${done.movedAside ? `, previous moved aside to ${done.movedAside}` : ''}${note ? `; ${note}` : ''}`,
    at,
  );
  return record;
}
