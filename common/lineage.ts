/**
 * The records an image lineage keeps. Pure types and checks, shared by the lineage workflow,
 * the activities that produce versions and the CLI that shows them.
 */
import type { BuildPlatform } from './arch.js';
import { checkText } from './limits.js';
import { InputError } from './names.js';

/** One row of a build report: what the image held after a phase (measured, not summed). */
export interface PhaseRow {
  phase: string;
  durationMs: number;
  packages: number;
  bytes: number;
  note?: string;
}

export interface Artifact {
  format: 'qcow2' | 'raw' | 'squashfs';
  /** Where the verified copy lives: the host of the image store and its path there. */
  host: string;
  path: string;
  sha256: string;
  bytes: number;
}

/** An immutable build result. Large manifests live beside the artifacts, by digest. */
export interface VersionRecord {
  id: string;
  createdAt: string;
  by: string;
  message: string;
  arch: string;
  os: string;
  recipeDigest: string;
  artifacts: Artifact[];
  packages: number;
  bytes: number;
  manifests: { packages: { path: string; sha256: string }; files: { path: string; sha256: string } };
  /** Directories each node gets its own copy of, and whether many nodes run the image at once. */
  private: { dir: string; exclude: string[] }[];
  shared: boolean;
  report: PhaseRow[];
  /** `build`: the architecture built for and how (native or emulated); versions built before it was recorded have none. */
  provenance: {
    builder: string;
    source: string;
    tools: Record<string, string>;
    workflowId: string;
    build?: BuildPlatform;
  };
  /** Every command the build ran, with its outcome and what it said on stderr. */
  log?: { path: string; sha256: string };
  revoked?: { reason: string; by: string; at: string };
  /** Set when retention or `imgflow remove` deleted the version's files; the record stays. */
  removed?: { reason: string; by: string; at: string };
  /** The version this one is a copy of, when its lineage began as a clone. */
  origin?: { image: string; version: string };
  /** A version this one is a copy of (through `through`, for a clone of a clone) was revoked: this one carries the same bytes. */
  ancestorRevoked?: AncestorRevoked;
  /** The recipe allowed password hashes in /etc/shadow: the build kept them and packing accepts them. */
  allowPasswordHashes?: boolean;
  /** The image is a capture of its builder host's own root filesystem, which its recipe allowed (allowBuilderRoot). */
  capturedBuilderRoot?: boolean;
}

/** The revoked version a copy descends from, as its revocation marked the copy. */
export interface AncestorRevoked {
  image: string;
  version: string;
  reason: string;
  by: string;
  at: string;
  /** The copies in between, `image:version`, nearest the revoked one first (none for a direct clone). */
  through?: string[];
}

/** A build's or a repair's result, before the lineage registers it and gives it its id. */
export type NewVersion = Omit<VersionRecord, 'id' | 'revoked' | 'removed'>;

/**
 * What a lineage keeps of a removed version once the full record is in its archive on the control
 * host: what its rules and listings read. Revocation may still change; the rest never does.
 */
export type VersionStub = Pick<
  VersionRecord,
  | 'id'
  | 'createdAt'
  | 'by'
  | 'message'
  | 'arch'
  | 'os'
  | 'packages'
  | 'bytes'
  | 'revoked'
  | 'origin'
  | 'ancestorRevoked'
> & {
  removed: NonNullable<VersionRecord['removed']>;
  /** The full record is in the lineage's version archive. */
  archived: true;
};

/** A version as a lineage's state holds it: the full record, or a removed version's stub. */
export type StoredVersion = VersionRecord | VersionStub;

export const isStub = (v: { id: string }): v is VersionStub => 'archived' in v;

/** The stub of a removed version. */
export function stubOf(v: VersionRecord & { removed: NonNullable<VersionRecord['removed']> }): VersionStub {
  const { id, createdAt, by, message, arch, os, packages, bytes, removed, revoked, origin, ancestorRevoked } = v;
  return {
    id,
    createdAt,
    by,
    message,
    arch,
    os,
    packages,
    bytes,
    removed,
    ...(revoked ? { revoked } : {}),
    ...(origin ? { origin } : {}),
    ...(ancestorRevoked ? { ancestorRevoked } : {}),
    archived: true,
  };
}

/** The full record again: the archived one, with the stub's word on what may have changed since. */
export function fromArchive({ archived: _marker, ...current }: VersionStub, record: VersionRecord): VersionRecord {
  return { ...record, ...current };
}

/** What a pack publishes: a netboot boot directory, or a read-only base for VMs. */
export type PackKind = 'netboot' | 'vm';

/** A version published as a deployable under a name: a netboot boot directory or a VM base. */
export interface PackRecord {
  version: string;
  tag: string;
  at: string;
  by: string;
  /** Absent in records made before VM packs existed: those are netboot. */
  kind?: PackKind;
  host: string;
  /** The name switched atomically: `<nas>/boot/<NAME>` or `<nas>/vm/<NAME>`. */
  path: string;
  /** A VM base's format (the file in the directory is `base.<format>`). */
  format?: 'qcow2' | 'raw';
  /** Netboot: where in the image the boot directory's kernel and initrd came from, when it has them. */
  kernel?: string;
  initrd?: string;
}

/** What a netboot pack lacks, said in its result and history rather than failing the pack. */
export function packNote(p: Pick<PackRecord, 'kind' | 'kernel' | 'initrd'>): string | undefined {
  if (p.kind === 'vm') return undefined;
  if (!p.kernel) return 'the image has no kernel (no boot/vmlinuz*): the boot directory holds the root image only';
  if (!p.initrd) return 'the image has no initrd (no boot/initrd.img*)';
  return undefined;
}

export interface TagRecord {
  version: string;
  at: string;
  by: string;
}

export interface ChannelEntry {
  version: string;
  tag: string;
  at: string;
  by: string;
  action: 'promote' | 'rollback';
  reason?: string;
  forced?: boolean;
}

export interface TestResult {
  passed: boolean;
  note?: string;
  at: string;
  by: string;
}

export interface HistoryEntry {
  seq: number;
  at: string;
  by: string;
  op: string;
  detail: string;
}

const TAG = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const USER = /^[A-Za-z0-9._@-]{1,64}$/;

export function checkTag(field: string, value: unknown): string {
  if (typeof value !== 'string' || !TAG.test(value) || value.includes('..')) {
    throw new InputError(
      field,
      'a tag of 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit',
      value,
    );
  }
  return value;
}

export function checkUser(field: string, value: unknown): string {
  if (typeof value !== 'string' || !USER.test(value))
    throw new InputError(field, 'a user name of 1-64 letters, digits, ".", "_", "@" or "-"', value);
  return value;
}

const CHANNEL = /^[a-z][a-z0-9-]{0,31}$/;

export function checkChannel(field: string, value: unknown): string {
  if (typeof value !== 'string' || !CHANNEL.test(value))
    throw new InputError(field, 'a channel name of 1-32 lower-case letters, digits or "-"', value);
  return value;
}

export function checkPackKind(field: string, value: unknown): PackKind {
  if (value !== 'netboot' && value !== 'vm') throw new InputError(field, 'netboot or vm', value);
  return value;
}

export function checkReason(field: string, value: unknown): string {
  return checkText(field, value, 'reason');
}

/** `<YYYY-mm-dd-HH-MM-SS>-RELEASE-by-<user>`, the netboot manager's default tag name. */
export function defaultTagName(at: Date, user: string): string {
  // A user name may hold what a tag may not ("@", ".."): "@" reads as "-at-", dots run into one.
  const who = user.replace(/@/g, '-at-').replace(/\.{2,}/g, '.');
  return `${timeStamp(at)}-RELEASE-by-${who}`.slice(0, 128);
}

/** `YYYY-mm-dd-HH-MM-SS` (UTC): tag names and the names of boot directories moved aside. */
export function timeStamp(at: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${at.getUTCFullYear()}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())}-${p(at.getUTCHours())}-${p(at.getUTCMinutes())}-${p(at.getUTCSeconds())}`;
}
