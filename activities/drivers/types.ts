/**
 * The three driver families behind "clone-to-compute": storage (a per-VM copy-on-write volume on
 * the NAS), export (the volume offered to exactly one compute host) and attach (the compute host
 * opening it). Every operation is idempotent: it looks before it acts, returns what already exists
 * and treats "already gone" as done, so an activity retried after a crash finishes the job.
 */
import type { Run } from '../runner.js';

/** An image version kept on the store; volumes are cloned from it. */
export interface BaseRef {
  image: string;
  version: string;
}

export interface BaseInfo extends BaseRef {
  /** Where the base's bytes are: a qcow2 file, a raw file in a dataset, a zvol device. */
  devicePath: string;
  /** The read-only point clones are made from: the file itself or a `dataset@snapshot`. */
  origin: string;
  sizeBytes: number;
}

export type DiskFormat = 'raw' | 'qcow2';

export interface VolumeInfo {
  volume: string;
  /** What an exporter serves: a file or a block device. */
  devicePath: string;
  format: DiskFormat;
  /** Size the guest sees. */
  sizeBytes: number;
  /** The base snapshot or file it was cloned from, if any. */
  origin?: string;
}

/** The name a volume set aside takes: lower-case letters, digits, ".", "_", "-"; it never becomes a path of its own. */
export const ASIDE_NAME = /^[a-z0-9][a-z0-9._-]{0,159}$/;

/** Prefix of every snapshot imgflow makes; pruning never touches any other snapshot. */
export const SNAPSHOT_PREFIX = 'imgflow-';

export interface StorageDriver {
  readonly kind: 'qcow2' | 'zfs';
  /** Brings a base in from an image file (any format qemu-img reads) and marks it complete. */
  importBase(input: BaseRef & { source: string }): Promise<BaseInfo>;
  /** The base if it is complete, else undefined (a half-imported base counts as absent). */
  describeBase(base: BaseRef): Promise<BaseInfo | undefined>;
  /** A copy-on-write clone of a base, grown to `sizeBytes` if given. */
  clone(input: { volume: string; base: BaseRef; sizeBytes?: number }): Promise<VolumeInfo>;
  describe(volume: string): Promise<VolumeInfo | undefined>;
  exists(volume: string): Promise<boolean>;
  /** Removes the volume and its snapshots; a volume already gone is fine. */
  destroy(volume: string): Promise<void>;
  /**
   * Moves the volume, with its snapshots and writes, out of the volumes' place to `aside` (kept,
   * never listed as a volume), freeing its name for a new clone. A volume already moved is fine;
   * undefined when there was nothing to move.
   */
  setAside(volume: string, aside: string): Promise<string | undefined>;
  /** Volumes imgflow made here, by name; anything else on the same store is left out. */
  list(): Promise<string[]>;
  /** Takes snapshot `name` (default: `imgflow-<UTC timestamp>`); an existing one is kept. */
  snapshot(volume: string, name?: string): Promise<string>;
  /** imgflow's snapshots of the volume, oldest first. */
  listSnapshots(volume: string): Promise<string[]>;
  /** Destroys all but the newest `keep` imgflow snapshots; returns the destroyed names. */
  pruneSnapshots(volume: string, keep?: number): Promise<string[]>;
}

/** A store that can stream snapshots to a like store elsewhere (ZFS send/receive). */
export interface ReplicatingStorage extends StorageDriver {
  /** The argv that writes a full (no `from`) or incremental stream of `volume@to` to stdout. */
  sendArgv(volume: string, snapshots: { from?: string; to: string }): string[];
  /** Reads a stream from `producer`'s stdout into `volume`, rolling back local changes since the common snapshot. */
  receive(volume: string, producer: readonly string[], options?: { bytesPerSecond?: number }): Promise<void>;
  /** Receives into `volume` whatever `feed` gives the receiving command (argv) on its stdin: a stream from another host. */
  receiveFrom(volume: string, feed: (consumer: string[]) => Promise<unknown>): Promise<void>;
}

export type ExportKind = 'tgt' | 'lio' | 'nbd' | 'none';

export interface ExportRequest {
  volume: string;
  devicePath: string;
  format?: DiskFormat;
  /** The one initiator allowed in: an iSCSI IQN for tgt/lio; unused by nbd and none. */
  initiator?: string;
}

export interface ExportInfo {
  kind: ExportKind;
  volume: string;
  /** The target's own name: an IQN, an NBD export name, or the local path. */
  target: string;
  /** How an initiator reaches it: iscsi://, nbd:// or a local path. */
  url: string;
  devicePath: string;
  /** Initiators allowed in, where the transport has such a list. */
  initiators: string[];
}

export interface ExportDriver {
  readonly kind: ExportKind;
  export(request: ExportRequest): Promise<ExportInfo>;
  /** Ends the export and everything made for it; an export already gone is fine. */
  unexport(volume: string): Promise<void>;
  /** imgflow's exports on this host (this NAS's only). */
  list(): Promise<ExportInfo[]>;
  find(volume: string): Promise<ExportInfo | undefined>;
}

export type AttachKind = 'iscsi-kernel' | 'iscsi-direct' | 'nbd-direct' | 'local';

export interface AttachRequest {
  volume: string;
  /** What the export returned: iscsi://, nbd:// or a local path. */
  url: string;
}

export interface Attachment {
  kind: AttachKind;
  volume: string;
  /** A block device or file on this host, for kinds that make one. */
  device?: string;
  /** A URL qemu or libvirt opens themselves, for the direct kinds. */
  url?: string;
  sizeBytes: number;
}

export interface AttachDriver {
  readonly kind: AttachKind;
  attach(request: AttachRequest): Promise<Attachment>;
  /** Lets go of the volume; one not attached is fine. */
  detach(request: AttachRequest): Promise<void>;
  isAttached(request: AttachRequest): Promise<boolean>;
}

/**
 * Runs `producer | consumer` without a shell: both in their own process group, stdout of the
 * first straight into stdin of the second, binary-safe.
 */
export type Pipe = (producer: readonly string[], consumer: readonly string[], options?: PipeOptions) => Promise<void>;

export interface PipeOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The stream's rate limit (a volume's upload or download speed); unlimited when absent. */
  bytesPerSecond?: number;
}

export interface DriverDeps {
  run: Run;
}
