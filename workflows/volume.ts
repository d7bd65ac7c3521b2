/**
 * One volume of clone-to-compute: an entity workflow per volume (`volume-<name>`) that keeps its
 * state and is its lock. Updates run one at a time (the lock is workflow state, so nothing holds
 * it once the workflow moves on); each is checked by a validator before anything is recorded.
 *
 * Map is a saga across `nas.<nas>` and `compute.<host>`: the compute host is asked for its
 * initiator first (a host that is down fails the map within the wait bound, before anything is
 * made), then clone, export to that initiator only (or, in sync mode, the node receives its own
 * copy), then attach. A failed step undoes the ones before it, in reverse.
 *
 * Sync mode pulls the node's writes back to the NAS on a durable timer; a failed pull is recorded
 * and retried, and the last success stays what it was.
 */
import { allHandlersFinished, ApplicationFailure, condition, continueAsNew, defineQuery, defineUpdate, patched, proxyActivities, setCurrentDetails, setHandler, upsertSearchAttributes, uuid4 } from '@temporalio/workflow';
import type { ComputeActivities, LocalCopy } from '../activities/compute/index.js';
import type { Attachment, ExportInfo } from '../activities/drivers/types.js';
import type { HostActivities } from '../activities/host.js';
import type { ClonedVolume, NasVolumeActivities, PullResult } from '../activities/nas/volumes.js';
import { clip } from '../common/limits.js';
import { checkReason, checkUser } from '../common/lineage.js';
import { checkHost, checkInt, checkName, checkSpeed, InputError } from '../common/names.js';
import { queues } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import { newestCommon } from '../common/snapshots.js';
import { compensate, type UndoStep } from './support/compensate.js';
import { historyFull } from './support/continue-as-new.js';
import { failureMessage, noWorkerTook } from './support/failures.js';
import { Lock } from './support/lock.js';
import { handleUpdate } from './support/updates.js';

export type VolumePhase = 'unmapped' | 'mapping' | 'mapped' | 'syncing-to-node' | 'syncing-to-nas' | 'unmapping' | 'error' | 'deleted';

/** The version a volume is cloned from, as the lineage records it (the CLI reads it there). */
export interface BaseVersion {
  image: string;
  version: string;
  /** The stored file on the NAS the volume is cloned from. */
  artifact: { format: string; host: string; path: string };
  revoked?: { reason: string; by: string; at: string };
}

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

export interface SyncState {
  frequencySeconds: number;
  nodeRoot?: string;
  nasRoot?: string;
  nextSyncAt?: string;
  lastSyncAt?: string;
  lastSnapshot?: string;
  lastDurationMs?: number;
  lastError?: string;
  failures: number;
  frozen: boolean;
}

export interface VolumeHistoryEntry {
  at: string;
  by: string;
  action: string;
  detail: string;
}

export interface VolumeState {
  volume: string;
  phase: VolumePhase;
  reason?: string;
  since: string;
  nas?: string;
  computeHost?: string;
  base?: { image: string; version: string };
  sizeBytes?: number;
  storage?: { kind: string; devicePath: string; root: string };
  export?: { kind: string; target: string; url: string; initiators: string[] };
  attachment?: { kind: string; device?: string; url?: string; sizeBytes: number };
  sync?: SyncState;
  speeds: { upload?: number; download?: number };
  /** The pool names the last map's client asked for (see MapRequest.pools). */
  pools?: { zpool?: string; remotepool?: string };
  waitSeconds: number;
  history: VolumeHistoryEntry[];
}

export interface VolumeView extends VolumeState {
  locked: boolean;
  /** The device or URL the VM opens. */
  target?: string;
}

export interface MapResult {
  volume: string;
  phase: VolumePhase;
  target: string;
  /** False when the volume was already mapped so (a repeated or concurrent request). */
  changed: boolean;
}

export interface ChangeResult {
  volume: string;
  phase: VolumePhase;
  changed: boolean;
  message: string;
}

export interface VolumeInput {
  volume: string;
  state?: VolumeState;
  maxHistoryEvents?: number;
}

export const volumeWorkflowId = (volume: string) => `volume-${checkName('volume', volume)}`;

export const mapUpdate = defineUpdate<MapResult, [MapRequest]>('map');
export const unmapUpdate = defineUpdate<ChangeResult, [{ by: string; waitSeconds?: number }]>('unmap');
export const deleteUpdate = defineUpdate<ChangeResult, [{ by: string }]>('delete');
export const setAttrsUpdate = defineUpdate<VolumeView, [VolumeAttrs]>('setAttrs');
export const syncNowUpdate = defineUpdate<PullResult, [{ by: string }]>('syncNow');
export const cleanUpdate = defineUpdate<ChangeResult, [{ by: string; force: boolean; reason: string }]>('clean');
export const volumeQuery = defineQuery<VolumeView>('volume');

const HISTORY_KEEP = 100;
const DEFAULT_FREQUENCY = 300;
const DEFAULT_WAIT = 60;
const MAX_BYTES = 64 * 1024 ** 4;

// ---------------------------------------------------------------------------------------------
// Checks (pure; the CLI uses the same)

export function checkSizeBytes(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1024 ** 2 || value > MAX_BYTES) {
    throw new InputError(field, 'a size from 1 MiB to 64 TiB', value);
  }
  return value;
}

export function checkMapRequest(r: MapRequest): void {
  checkUser('by', r.by);
  checkName('image', r.base?.image);
  checkName('version', r.base?.version);
  checkHost('nas', r.nas);
  checkHost('compute host', r.computeHost);
  if (r.base.revoked) throw new InputError('version', `a version that is not revoked (${r.base.image}:${r.base.version} was revoked by ${r.base.revoked.by}: ${r.base.revoked.reason})`, r.base.version);
  if (r.base.artifact?.host !== r.nas) throw new InputError('nas', `the NAS storing ${r.base.image}:${r.base.version} (${r.base.artifact?.host ?? 'none'})`, r.nas);
  if (!['qcow2', 'raw'].includes(r.base.artifact.format)) throw new InputError('image', 'a version with a qcow2 or raw artifact', r.base.artifact.format);
  if (r.sizeBytes !== undefined) checkSizeBytes('size', r.sizeBytes);
  if (r.frequencySeconds !== undefined) checkInt('frequency', r.frequencySeconds, 10, 86_400);
  if (r.waitSeconds !== undefined) checkInt('wait', r.waitSeconds, 1, 3600);
  if (r.pools?.zpool !== undefined) checkName('zpool', r.pools.zpool);
  if (r.pools?.remotepool !== undefined) checkName('remotepool', r.pools.remotepool);
}

const RESETTABLE = ['frequency', 'uploadSpeed', 'downloadSpeed'] as const;

export function checkAttrs(a: VolumeAttrs): void {
  checkUser('by', a.by);
  if (a.frequencySeconds !== undefined) checkInt('frequency', a.frequencySeconds, 10, 86_400);
  if (a.uploadSpeed !== undefined) checkSpeed('upload-speed', a.uploadSpeed);
  if (a.downloadSpeed !== undefined) checkSpeed('download-speed', a.downloadSpeed);
  if (a.frozen !== undefined && typeof a.frozen !== 'boolean') throw new InputError('frozen', 'true or false', a.frozen);
  if (a.reset !== undefined) {
    if (!Array.isArray(a.reset)) throw new InputError('reset', `a list of ${RESETTABLE.join(', ')}`, a.reset);
    for (const field of a.reset) if (!RESETTABLE.includes(field)) throw new InputError('reset', `one of ${RESETTABLE.join(', ')}`, field);
    const both = a.reset.find((f) => (f === 'frequency' ? a.frequencySeconds : f === 'uploadSpeed' ? a.uploadSpeed : a.downloadSpeed) !== undefined);
    if (both) throw new InputError(both, 'a value or a reset, not both', both);
  }
}

/** `imgflow-<UTC time>`, the drivers' snapshot names, from workflow time (the same on replay and retry). */
function snapshotAt(at: Date): string {
  return `imgflow-${at.toISOString().replace(/[-:.]/g, '').toLowerCase()}`;
}

/**
 * A transfer's rate limit from the volume's speeds: download is the node's copy from the NAS,
 * upload the pulls back. A change applies from the next transfer on. Only the activities' inputs
 * gain a field (the workflow's commands are the same), so saved histories replay unchanged.
 */
/** Streams between hosts go over the network where the receiving host listens (histories from before call the older activities). */
const SYNC_OVER_NETWORK = 'sync-over-network';
/** How much longer than a step's wait a receiving host keeps its port open for the sender. */
const STREAM_GRACE_SECONDS = 60;
/** An unmap of a volume in error finishes the job (histories from before refused it). */
const UNMAP_FINISHES_ERROR = 'unmap-finishes-error';

function rate(bytesPerSecond: number | undefined): { bytesPerSecond?: number } {
  return bytesPerSecond ? { bytesPerSecond } : {};
}

// ---------------------------------------------------------------------------------------------
// Failures as one line

/** A failure as one line; no worker taking a step names the host queue it waited on. */
function why(err: unknown, queue?: string): string {
  if (noWorkerTook(err)) return `no worker took the step from ${queue ?? 'its host queue'} in time (host down?)`;
  return failureMessage(err);
}

// ---------------------------------------------------------------------------------------------
// The entity

export function newVolumeState(volume: string, at: string): VolumeState {
  return { volume, phase: 'unmapped', since: at, speeds: {}, waitSeconds: DEFAULT_WAIT, history: [] };
}

class Volume {
  readonly lock = new Lock();
  constructor(readonly s: VolumeState) {}

  get busy(): boolean {
    return this.lock.busy;
  }

  view(): VolumeView {
    const target = this.s.attachment?.device ?? this.s.attachment?.url ?? this.s.export?.url;
    return { ...this.s, locked: this.busy, ...(target ? { target } : {}) };
  }

  record(by: string, action: string, detail: string): void {
    this.s.history.push({ at: new Date().toISOString(), by, action, detail: clip(detail) });
    if (this.s.history.length > HISTORY_KEEP) this.s.history.splice(0, this.s.history.length - HISTORY_KEEP);
  }

  enter(phase: VolumePhase, reason?: string): void {
    this.s.phase = phase;
    this.s.since = new Date().toISOString();
    if (reason === undefined) delete this.s.reason;
    else this.s.reason = reason;
    this.publish();
  }

  publish(): void {
    const s = this.s;
    upsertSearchAttributes([
      { key: SA.kind, value: 'volume' },
      { key: SA.volume, value: s.volume },
      { key: SA.state, value: s.phase },
      ...(s.nas ? [{ key: SA.nas, value: s.nas }] : []),
      ...(s.computeHost ? [{ key: SA.computeHost, value: s.computeHost }] : []),
      ...(s.base ? [{ key: SA.image, value: s.base.image }, { key: SA.version, value: s.base.version }] : []),
    ]);
    setCurrentDetails(`**${s.volume}** ${s.phase}${s.reason ? `: ${s.reason}` : ''}${s.computeHost ? ` on ${s.computeHost}` : ''}${s.nas ? ` from ${s.nas}` : ''}`);
  }

  /** Runs `fn` holding the volume. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.hold(fn);
  }

  nas(host: string) {
    return proxyActivities<NasVolumeActivities>({
      taskQueue: queues.nas(host),
      scheduleToStartTimeout: `${this.s.waitSeconds}s`,
      startToCloseTimeout: '2h',
      heartbeatTimeout: '30s',
      retry: { initialInterval: '1s', maximumAttempts: 5, nonRetryableErrorTypes: ['InputError'] },
    });
  }

  compute(host: string) {
    return proxyActivities<ComputeActivities & HostActivities>({
      taskQueue: queues.compute(host),
      scheduleToStartTimeout: `${this.s.waitSeconds}s`,
      startToCloseTimeout: '2h',
      heartbeatTimeout: '30s',
      retry: { initialInterval: '1s', maximumAttempts: 5, nonRetryableErrorTypes: ['InputError'] },
    });
  }

  sameMapping(r: MapRequest): boolean {
    const s = this.s;
    return s.nas === r.nas && s.computeHost === r.computeHost && s.base?.image === r.base.image && s.base?.version === r.base.version && !!s.sync === !!r.sync;
  }

  /** `locked`: under the lock the phase is settled, so a busy volume gets no benefit of the doubt. */
  validateMap(r: MapRequest, locked = false): void {
    checkMapRequest(r);
    const s = this.s;
    if (s.phase === 'error') throw new InputError('volume', `a volume not in error (${s.volume}: ${s.reason ?? 'error'}; see imgflow clean)`, s.volume);
    if (s.phase === 'deleted') throw new InputError('volume', 'a volume not being deleted', s.volume);
    if (s.phase !== 'unmapped' && (locked || !this.busy) && !this.sameMapping(r)) {
      throw new InputError('volume', `an unmapped volume (${s.volume} is ${s.phase} on ${s.computeHost ?? '?'}; unmap it first)`, s.volume);
    }
    // Once cloned, a volume stays on its NAS and base: a new base needs a new volume.
    if (s.storage && s.base && (s.nas !== r.nas || s.base.image !== r.base.image || s.base.version !== r.base.version)) {
      throw new InputError('volume', `a new volume name (${s.volume} is a clone of ${s.base.image}:${s.base.version} on ${s.nas})`, s.volume);
    }
  }

  async map(r: MapRequest): Promise<MapResult> {
    if (this.s.phase === 'mapped' && this.sameMapping(r)) return { volume: this.s.volume, phase: this.s.phase, target: this.view().target ?? '', changed: false };
    this.validateMap(r, true);
    const s = this.s;
    s.waitSeconds = r.waitSeconds ?? s.waitSeconds;
    s.nas = r.nas;
    s.computeHost = r.computeHost;
    s.base = { image: r.base.image, version: r.base.version };
    if (r.sizeBytes !== undefined) s.sizeBytes = r.sizeBytes;
    if (r.pools) s.pools = { ...r.pools };
    if (r.sync) s.sync = { frequencySeconds: r.frequencySeconds ?? s.sync?.frequencySeconds ?? DEFAULT_FREQUENCY, failures: 0, frozen: s.sync?.frozen ?? false };
    else delete s.sync;
    this.record(r.by, 'map', `${r.base.image}:${r.base.version} from ${r.nas} to ${r.computeHost}${r.sync ? ' (sync)' : ''}`);
    this.enter('mapping');

    const nas = this.nas(r.nas);
    const compute = this.compute(r.computeHost);
    const undo: UndoStep[] = [];
    let queue = queues.compute(r.computeHost);
    try {
      const { initiator } = await compute.computeInitiator();
      queue = queues.nas(r.nas);
      const hadClone = !!s.storage;
      const cloned: ClonedVolume = await nas.volumeClone({ volume: s.volume, image: r.base.image, version: r.base.version, source: r.base.artifact.path, ...(s.sizeBytes ? { sizeBytes: s.sizeBytes } : {}) });
      s.storage = { kind: cloned.storage, devicePath: cloned.devicePath, root: cloned.root };
      if (!hadClone) undo.push({ what: 'destroy clone', run: async () => nas.volumeDestroy({ volume: s.volume }).then(() => delete s.storage) });

      let url: string;
      if (r.sync) {
        const snapshot = snapshotAt(new Date());
        await nas.volumeSnapshot({ volume: s.volume, name: snapshot });
        this.enter('syncing-to-node');
        queue = queues.compute(r.computeHost);
        undo.push({ what: 'drop node copy', run: async () => compute.computeDropCopy({ volume: s.volume }) });
        const copy = patched(SYNC_OVER_NETWORK)
          ? await this.copyToNode(cloned.root, snapshot)
          : await compute.computeReceive({ volume: s.volume, nas: r.nas, nasRoot: cloned.root, snapshot, ...rate(s.speeds.download) });
        s.sync = { ...s.sync!, nodeRoot: copy.root, nasRoot: cloned.root, lastSnapshot: snapshot };
        url = copy.devicePath;
      } else {
        undo.push({ what: 'unexport', run: async () => nas.volumeUnexport({ volume: s.volume }).then(() => delete s.export) });
        const exported: ExportInfo = await nas.volumeExport({ volume: s.volume, initiator });
        s.export = { kind: exported.kind, target: exported.target, url: exported.url, initiators: exported.initiators };
        url = exported.url;
      }
      queue = queues.compute(r.computeHost);
      undo.push({ what: 'detach', run: async () => compute.computeDetach({ volume: s.volume, url, waitSeconds: 30 }).then(() => delete s.attachment) });
      const attached: Attachment = await compute.computeAttach({ volume: s.volume, url });
      s.attachment = { kind: attached.kind, sizeBytes: attached.sizeBytes, ...(attached.device ? { device: attached.device } : {}), ...(attached.url ? { url: attached.url } : {}) };
      if (s.sync) s.sync.nextSyncAt = new Date(Date.now() + s.sync.frequencySeconds * 1000).toISOString();
      this.enter('mapped');
      this.record(r.by, 'mapped', this.view().target ?? '');
      return { volume: s.volume, phase: s.phase, target: this.view().target ?? '', changed: true };
    } catch (err) {
      const reason = why(err, queue);
      const failed = (await compensate(undo)).map(({ what, error }) => `${what}: ${why(error)}`);
      if (failed.length) {
        this.enter('error', `map failed (${reason}); undo failed: ${failed.join('; ')}`);
      } else {
        this.enter('unmapped', `map failed: ${reason}`);
        delete s.attachment;
        if (s.sync) delete s.sync.nextSyncAt;
      }
      this.record(r.by, 'map-failed', s.reason ?? reason);
      throw ApplicationFailure.nonRetryable(`map of ${s.volume} failed: ${reason}${failed.length ? `; undo failed: ${failed.join('; ')}` : '; every step was undone'}`, 'MapFailed');
    }
  }

  /**
   * The node's first copy, streamed by the NAS to the node over the network, each side's command
   * on its own host, behind a one-time token; a node that takes no streams (null from listen)
   * receives it the older way, pulling over ssh.
   */
  async copyToNode(nasRoot: string, snapshot: string): Promise<LocalCopy> {
    const s = this.s;
    const compute = this.compute(s.computeHost!);
    const token = uuid4();
    const endpoint = await compute.computeStreamListen({ token, waitSeconds: s.waitSeconds + STREAM_GRACE_SECONDS });
    if (!endpoint) return compute.computeReceive({ volume: s.volume, nas: s.nas!, nasRoot, snapshot, ...rate(s.speeds.download) });
    const [copy] = await Promise.all([
      compute.computeStreamReceive({ volume: s.volume, token, snapshot }),
      this.nas(s.nas!).volumeStreamSend({ volume: s.volume, to: snapshot, ...endpoint, token, ...rate(s.speeds.download) }),
    ]);
    return copy;
  }

  /**
   * A pull over the network: a snapshot on the node, streamed by the node to the NAS from the
   * newest snapshot both share, then both pruned. A NAS that takes no streams pulls over ssh.
   */
  async pullOverNetwork(snapshot: string): Promise<PullResult> {
    const s = this.s;
    const nas = this.nas(s.nas!);
    const compute = this.compute(s.computeHost!);
    const volume = s.volume;
    const token = uuid4();
    const endpoint = await nas.volumeStreamListen({ token, waitSeconds: s.waitSeconds + STREAM_GRACE_SECONDS });
    if (!endpoint) return nas.volumePull({ volume, computeHost: s.computeHost!, nodeRoot: s.sync!.nodeRoot!, snapshot, ...rate(s.speeds.upload) });
    const started = Date.now();
    await compute.computeSnapshot({ volume, name: snapshot });
    const [onNode, onNas] = await Promise.all([compute.computeSnapshots({ volume }), nas.volumeSnapshots({ volume })]);
    const from = newestCommon(onNode, onNas);
    const sent = !onNas.includes(snapshot);
    if (sent) {
      if (!from) throw ApplicationFailure.nonRetryable(`volume ${volume}: the copies share no snapshot; a full copy would overwrite the NAS's`, 'SyncFailed');
      await Promise.all([nas.volumeStreamReceive({ volume, token }), compute.computeStreamSend({ volume, from, to: snapshot, ...endpoint, token, ...rate(s.speeds.upload) })]);
    }
    const pruned = [...(await compute.computePrune({ volume })), ...(await nas.volumePrune({ volume }))];
    return { snapshot, ...(sent && from ? { from } : {}), sent, durationMs: Date.now() - started, pruned };
  }

  /** A pull of the node's writes; a failure is recorded (never as a success) and thrown on. */
  async pull(by: string): Promise<PullResult> {
    const s = this.s;
    const sync = s.sync!;
    const back = s.phase;
    this.enter('syncing-to-nas', s.reason);
    try {
      const snapshot = snapshotAt(new Date());
      const result = patched(SYNC_OVER_NETWORK)
        ? await this.pullOverNetwork(snapshot)
        : await this.nas(s.nas!).volumePull({ volume: s.volume, computeHost: s.computeHost!, nodeRoot: sync.nodeRoot!, snapshot, ...rate(s.speeds.upload) });
      sync.lastSyncAt = new Date().toISOString();
      sync.lastSnapshot = result.snapshot;
      sync.lastDurationMs = result.durationMs;
      sync.failures = 0;
      delete sync.lastError;
      this.record(by, 'sync', `${result.snapshot}${result.from ? ` from ${result.from}` : ''} in ${result.durationMs} ms`);
      return result;
    } catch (err) {
      sync.failures++;
      sync.lastError = why(err, queues.nas(s.nas!));
      this.record(by, 'sync-failed', sync.lastError);
      throw ApplicationFailure.nonRetryable(`sync of ${s.volume} failed: ${sync.lastError}`, 'SyncFailed');
    } finally {
      // Failures retry sooner than the frequency, but never faster than every 10 s.
      const wait = sync.failures ? Math.min(sync.frequencySeconds, 10 * sync.failures) : sync.frequencySeconds;
      sync.nextSyncAt = new Date(Date.now() + wait * 1000).toISOString();
      this.enter(back === 'syncing-to-nas' ? 'mapped' : back, s.reason);
    }
  }

  async unmap(by: string, waitSeconds: number): Promise<ChangeResult> {
    const s = this.s;
    if (s.phase === 'unmapped') return { volume: s.volume, phase: s.phase, changed: false, message: `${s.volume} is not mapped: nothing to do` };
    // A volume left in error by a step that failed (an unexport while the NAS was down) is finished
    // by the next unmap: each step looks before it acts, and only what is still there is undone.
    const resume = s.phase === 'error' && !!s.computeHost && !!s.nas && patched(UNMAP_FINISHES_ERROR);
    if (s.phase !== 'mapped' && !resume) throw ApplicationFailure.nonRetryable(`${s.volume} is ${s.phase}${s.reason ? ` (${s.reason})` : ''}; see imgflow clean`, 'InputError');
    // The node's copy is the only copy of its newest writes: it goes only after a final pull succeeded
    // (in error, that pull was done already, or the map that failed never served a VM).
    if (s.sync && !resume) await this.pull(by);
    if (resume) this.record(by, 'unmap-resumed', s.reason ?? 'error');
    this.enter('unmapping');
    const url = resume ? (s.attachment?.device ?? s.attachment?.url) : (s.attachment?.device ?? s.attachment?.url ?? s.export?.url);
    try {
      if (url) await this.compute(s.computeHost!).computeDetach({ volume: s.volume, url, waitSeconds });
      delete s.attachment;
      if (s.sync) await this.compute(s.computeHost!).computeDropCopy({ volume: s.volume });
      await this.nas(s.nas!).volumeUnexport({ volume: s.volume });
      delete s.export;
    } catch (err) {
      const reason = why(err);
      this.enter(s.attachment && !resume ? 'mapped' : 'error', `unmap failed: ${reason}`);
      this.record(by, 'unmap-failed', reason);
      throw ApplicationFailure.nonRetryable(`unmap of ${s.volume} failed: ${reason}`, 'UnmapFailed');
    }
    if (s.sync) delete s.sync.nextSyncAt;
    this.enter('unmapped');
    this.record(by, 'unmapped', `clone kept on ${s.nas}`);
    return { volume: s.volume, phase: s.phase, changed: true, message: `${s.volume} unmapped from ${s.computeHost}; clone kept on ${s.nas}` };
  }

  validateDelete(by: string): void {
    checkUser('by', by);
    if (this.s.phase !== 'unmapped') throw new InputError('volume', `an unmapped volume to delete (${this.s.volume} is ${this.s.phase}; unmap it first)`, this.s.volume);
  }

  async delete(by: string): Promise<ChangeResult> {
    this.validateDelete(by);
    const s = this.s;
    if (s.nas) await this.nas(s.nas).volumeDestroy({ volume: s.volume });
    delete s.storage;
    this.record(by, 'deleted', s.nas ? `clone destroyed on ${s.nas}` : 'never cloned');
    this.enter('deleted');
    return { volume: s.volume, phase: s.phase, changed: true, message: `${s.volume} deleted` };
  }

  setAttrs(a: VolumeAttrs): VolumeView {
    const s = this.s;
    if (a.uploadSpeed !== undefined) s.speeds.upload = a.uploadSpeed;
    if (a.downloadSpeed !== undefined) s.speeds.download = a.downloadSpeed;
    if (a.reset?.includes('uploadSpeed')) delete s.speeds.upload;
    if (a.reset?.includes('downloadSpeed')) delete s.speeds.download;
    if (s.sync) {
      if (a.frequencySeconds !== undefined) s.sync.frequencySeconds = a.frequencySeconds;
      if (a.reset?.includes('frequency')) s.sync.frequencySeconds = DEFAULT_FREQUENCY;
      if (a.frozen !== undefined) s.sync.frozen = a.frozen;
      if (s.phase === 'mapped') s.sync.nextSyncAt = new Date(Date.now() + s.sync.frequencySeconds * 1000).toISOString();
    }
    this.record(a.by, 'set-attrs', JSON.stringify({ ...a, by: undefined }));
    this.publish();
    return this.view();
  }

  /** The operator's repair when a host is gone: NAS-side export ended if reachable, volume unmapped. */
  async clean(by: string, reason: string): Promise<ChangeResult> {
    const s = this.s;
    const notes: string[] = [];
    if (s.nas) {
      try {
        await this.nas(s.nas).volumeUnexport({ volume: s.volume });
        delete s.export;
      } catch (err) {
        notes.push(`unexport on ${s.nas} failed: ${why(err)}`);
      }
    }
    delete s.attachment;
    if (s.sync) delete s.sync.nextSyncAt;
    this.record(by, 'clean', `${reason}${notes.length ? ` (${notes.join('; ')})` : ''}`);
    this.enter('unmapped', `cleaned by ${by}: ${reason}`);
    return { volume: s.volume, phase: s.phase, changed: true, message: `${s.volume} cleaned${notes.length ? `; ${notes.join('; ')}` : ''}` };
  }

  syncDue(): boolean {
    const sync = this.s.sync;
    return !!sync?.nextSyncAt && !sync.frozen && this.s.phase === 'mapped' && Date.parse(sync.nextSyncAt) <= Date.now();
  }

  /** What the sync timer depends on: a change re-arms it. */
  syncPlan(): string {
    return `${this.s.phase} ${this.s.sync?.nextSyncAt ?? '-'} ${this.s.sync?.frozen ?? '-'}`;
  }

  msUntilSync(): number | undefined {
    const sync = this.s.sync;
    if (!sync?.nextSyncAt || sync.frozen || this.s.phase !== 'mapped') return undefined;
    return Math.max(1, Date.parse(sync.nextSyncAt) - Date.now());
  }
}

export async function volumeWorkflow(input: VolumeInput): Promise<VolumeView> {
  const v = new Volume(input.state ?? newVolumeState(checkName('volume', input.volume), new Date().toISOString()));
  const maxHistory = input.maxHistoryEvents ?? 5_000;
  v.publish();

  handleUpdate(mapUpdate, (r) => v.validateMap(r), (r) => v.exclusive(() => v.map(r)));
  handleUpdate(
    unmapUpdate,
    (i) => {
      checkUser('by', i.by);
      if (i.waitSeconds !== undefined) checkInt('wait', i.waitSeconds, 0, 86_400);
    },
    (i) => v.exclusive(() => v.unmap(i.by, i.waitSeconds ?? 60)),
  );
  handleUpdate(deleteUpdate, (i) => v.validateDelete(i.by), (i) => v.exclusive(() => v.delete(i.by)));
  handleUpdate(
    setAttrsUpdate,
    (a) => {
      checkAttrs(a);
      // Pull settings would be kept and do nothing: a volume not in sync mode has no pulls.
      const syncOnly = a.frequencySeconds !== undefined ? 'frequency' : a.frozen !== undefined ? (a.frozen ? 'freeze' : 'thaw') : undefined;
      if (syncOnly && !v.s.sync) throw new InputError(syncOnly, `a volume mapped in sync mode (${v.s.volume} is not: map it with --sync)`, v.s.volume);
    },
    async (a) => v.setAttrs(a),
  );
  handleUpdate(
    syncNowUpdate,
    (i) => {
      checkUser('by', i.by);
      if (!v.s.sync || v.s.phase !== 'mapped') throw new InputError('volume', `a volume mapped in sync mode (${v.s.volume} is ${v.s.phase}${v.s.sync ? '' : ', not in sync mode'})`, v.s.volume);
    },
    (i) => v.exclusive(() => (v.s.sync && v.s.phase === 'mapped' ? v.pull(i.by) : Promise.reject(new InputError('volume', 'a volume mapped in sync mode', v.s.volume)))),
  );
  handleUpdate(
    cleanUpdate,
    (i) => {
      checkUser('by', i.by);
      if (i.force !== true) throw new InputError('force', '--force: clean skips the compute host and may leave it holding the volume', i.force);
      checkReason('reason', i.reason);
    },
    (i) => v.exclusive(() => v.clean(i.by, i.reason)),
  );
  setHandler(volumeQuery, () => v.view());

  for (;;) {
    const wait = v.msUntilSync();
    const plan = v.syncPlan();
    const wake = () => v.s.phase === 'deleted' || historyFull(maxHistory) || v.syncDue() || v.syncPlan() !== plan;
    // A durable timer: a worker restart loses no scheduled pull.
    if (wait === undefined) await condition(wake);
    else await condition(wake, wait);
    if (v.s.phase === 'deleted' || historyFull(maxHistory)) break;
    if (v.syncDue()) {
      // A failed scheduled pull is recorded and rescheduled by pull itself.
      await v.exclusive(async () => (v.syncDue() ? v.pull('imgflow') : undefined)).catch(() => undefined);
    }
  }
  await condition(() => !v.busy && allHandlersFinished());
  if (v.s.phase === 'deleted') return v.view();
  return continueAsNew<typeof volumeWorkflow>({ ...input, state: v.s });
}
