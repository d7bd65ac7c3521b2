/** The rules of a volume as code over its state: its checks, the map saga, pulls, unmap, delete, clean and the sync timer. */
import {
  ApplicationFailure,
  patched,
  proxyActivities,
  setCurrentDetails,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { ComputeActivities } from '../../activities/compute/index.js';
import type { Attachment, ExportInfo } from '../../activities/drivers/types.js';
import type { HostActivities } from '../../activities/host.js';
import type { CloneRequest, ClonedVolume, NasVolumeActivities, PullResult } from '../../activities/nas/volumes.js';
import { clip } from '../../common/limits.js';
import { checkUser, timeStamp } from '../../common/lineage.js';
import { InputError } from '../../common/names.js';
import { queues } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import {
  checkBaseNames,
  checkBaseStored,
  checkMapRequest,
  originOf,
  type BaseVersion,
  type MapRequest,
  type VolumeAttrs,
} from '../../common/volume.js';
import { compensate, type UndoStep } from '../support/compensate.js';
import { failureMessage, noWorkerTook } from '../support/failures.js';
import type { RecordListener } from '../support/history.js';
import { Lock } from '../support/lock.js';
import type {
  ChangeResult,
  MapResult,
  StagedBase,
  StageRequest,
  StageResult,
  VolumePhase,
  VolumeState,
  VolumeView,
} from './messages.js';
import { copyToNode, pullOverNetwork, rate, SYNC_OVER_NETWORK } from './transfers.js';

const HISTORY_KEEP = 100;
const DEFAULT_FREQUENCY = 300;
const DEFAULT_WAIT = 60;

/** `imgflow-<UTC time>`, the drivers' snapshot names, from workflow time (the same on replay and retry). */
function snapshotAt(at: Date): string {
  return `imgflow-${at.toISOString().replace(/[-:.]/g, '').toLowerCase()}`;
}

/** A map clones and exports in one NAS step (histories from before took two). */
const CLONE_AND_EXPORT_AT_ONCE = 'clone-and-export-at-once';

/** An unmap of a volume in error finishes the job (histories from before refused it). */
const UNMAP_FINISHES_ERROR = 'unmap-finishes-error';

/** A failure as one line; no worker taking a step names the host queue it waited on. */
function why(err: unknown, queue?: string): string {
  if (noWorkerTook(err)) return `no worker took the step from ${queue ?? 'its host queue'} in time (host down?)`;
  return failureMessage(err);
}

export function newVolumeState(volume: string, at: string): VolumeState {
  return { volume, phase: 'unmapped', since: at, speeds: {}, waitSeconds: DEFAULT_WAIT, history: [] };
}

export class Volume {
  readonly lock = new Lock();
  constructor(readonly s: VolumeState) {}

  get busy(): boolean {
    return this.lock.busy;
  }

  view(): VolumeView {
    const target = this.s.attachment?.device ?? this.s.attachment?.url ?? this.s.export?.url;
    return { ...this.s, locked: this.busy, ...(target ? { target } : {}) };
  }

  /** Told of each entry recorded: the workflow hands them on as events. */
  onRecord?: RecordListener;

  record(by: string, action: string, detail: string): void {
    const entry = { at: new Date().toISOString(), by, action, detail: clip(detail) };
    this.s.history.push(entry);
    if (this.s.history.length > HISTORY_KEEP) this.s.history.splice(0, this.s.history.length - HISTORY_KEEP);
    this.s.seq = (this.s.seq ?? 0) + 1;
    this.onRecord?.({ seq: this.s.seq, at: entry.at, by, op: action, detail: entry.detail });
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
      ...(s.base
        ? [
            { key: SA.image, value: s.base.image },
            { key: SA.version, value: s.base.version },
          ]
        : []),
    ]);
    setCurrentDetails(
      `**${s.volume}** ${s.phase}${s.reason ? `: ${s.reason}` : ''}${s.computeHost ? ` on ${s.computeHost}` : ''}${s.nas ? ` from ${s.nas}` : ''}`,
    );
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
    return (
      s.nas === r.nas &&
      s.computeHost === r.computeHost &&
      s.base?.image === r.base.image &&
      s.base?.version === r.base.version &&
      !!s.sync === !!r.sync
    );
  }

  /** `locked`: under the lock the phase is settled, so a busy volume gets no benefit of the doubt. */
  validateMap(r: MapRequest, locked = false): void {
    checkMapRequest(r);
    const s = this.s;
    if (s.phase === 'error')
      throw new InputError(
        'volume',
        `a volume not in error (${s.volume}: ${s.reason ?? 'error'}; see imgflow clean)`,
        s.volume,
      );
    if (s.phase === 'deleted') throw new InputError('volume', 'a volume not being deleted', s.volume);
    if (s.phase !== 'unmapped' && (locked || !this.busy) && !this.sameMapping(r)) {
      throw new InputError(
        'volume',
        `an unmapped volume (${s.volume} is ${s.phase} on ${s.computeHost ?? '?'}; unmap it first)`,
        s.volume,
      );
    }
    // Once cloned, a volume stays on its NAS and base: a new base needs a new volume (or a staged one).
    if (
      !this.stagedFor(r) &&
      s.storage &&
      s.base &&
      (s.nas !== r.nas || s.base.image !== r.base.image || s.base.version !== r.base.version)
    ) {
      throw new InputError(
        'volume',
        `a new volume name (${s.volume} is a clone of ${s.base.image}:${s.base.version} on ${s.nas})`,
        s.volume,
      );
    }
  }

  async map(asked: MapRequest): Promise<MapResult> {
    if (this.s.phase === 'mapped' && this.sameMapping(asked))
      return { volume: this.s.volume, phase: this.s.phase, target: this.view().target ?? '', changed: false };
    this.validateMap(asked, true);
    const r = await this.applyStaged(asked);
    const s = this.s;
    s.waitSeconds = r.waitSeconds ?? s.waitSeconds;
    s.nas = r.nas;
    s.computeHost = r.computeHost;
    s.base = { image: r.base.image, version: r.base.version };
    const origin = originOf(r.base);
    if (origin) s.origin = origin;
    else delete s.origin;
    if (r.sizeBytes !== undefined) s.sizeBytes = r.sizeBytes;
    if (r.pools) s.pools = { ...r.pools };
    if (r.sync)
      s.sync = {
        frequencySeconds: r.frequencySeconds ?? s.sync?.frequencySeconds ?? DEFAULT_FREQUENCY,
        failures: 0,
        frozen: s.sync?.frozen ?? false,
      };
    else delete s.sync;
    this.record(
      r.by,
      'map',
      `${r.base.image}:${r.base.version} from ${r.nas} to ${r.computeHost}${r.sync ? ' (sync)' : ''}`,
    );
    this.enter('mapping');

    const nas = this.nas(r.nas);
    const compute = this.compute(r.computeHost);
    const undo: UndoStep[] = [];
    let queue = queues.compute(r.computeHost);
    try {
      const { initiator } = await compute.computeInitiator();
      queue = queues.nas(r.nas);
      const clone: CloneRequest = {
        volume: s.volume,
        image: r.base.image,
        version: r.base.version,
        source: r.base.artifact.path,
        ...(s.sizeBytes ? { sizeBytes: s.sizeBytes } : {}),
      };
      let url: string;
      if (!r.sync && patched(CLONE_AND_EXPORT_AT_ONCE)) {
        // Both undo steps look before they act, so they are right whichever half failed.
        if (!s.storage) undo.push(this.undoClone(nas));
        undo.push(this.undoExport(nas));
        const { cloned, exported } = await nas.volumeCloneExport({ ...clone, initiator });
        this.keepClone(cloned);
        url = this.keepExport(exported);
      } else {
        // Sync maps (and histories from before the one-step export): the clone first, on its own.
        const hadClone = !!s.storage;
        const cloned = this.keepClone(await nas.volumeClone(clone));
        if (!hadClone) undo.push(this.undoClone(nas));
        if (r.sync) {
          const snapshot = snapshotAt(new Date());
          await nas.volumeSnapshot({ volume: s.volume, name: snapshot });
          this.enter('syncing-to-node');
          queue = queues.compute(r.computeHost);
          undo.push({ what: 'drop node copy', run: async () => compute.computeDropCopy({ volume: s.volume }) });
          const copy = patched(SYNC_OVER_NETWORK)
            ? await copyToNode(s, nas, compute, cloned.root, snapshot)
            : await compute.computeReceive({
                volume: s.volume,
                nas: r.nas,
                nasRoot: cloned.root,
                snapshot,
                ...rate(s.speeds.download),
              });
          s.sync = { ...s.sync!, nodeRoot: copy.root, nasRoot: cloned.root, lastSnapshot: snapshot };
          url = copy.devicePath;
        } else {
          undo.push(this.undoExport(nas));
          url = this.keepExport(await nas.volumeExport({ volume: s.volume, initiator }));
        }
      }
      queue = queues.compute(r.computeHost);
      undo.push({
        what: 'detach',
        run: async () =>
          compute.computeDetach({ volume: s.volume, url, waitSeconds: 30 }).then(() => delete s.attachment),
      });
      const attached: Attachment = await compute.computeAttach({ volume: s.volume, url });
      s.attachment = {
        kind: attached.kind,
        sizeBytes: attached.sizeBytes,
        ...(attached.device ? { device: attached.device } : {}),
        ...(attached.url ? { url: attached.url } : {}),
      };
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
      throw ApplicationFailure.nonRetryable(
        `map of ${s.volume} failed: ${reason}${failed.length ? `; undo failed: ${failed.join('; ')}` : '; every step was undone'}`,
        'MapFailed',
      );
    }
  }
  private keepClone(cloned: ClonedVolume): ClonedVolume {
    this.s.storage = { kind: cloned.storage, devicePath: cloned.devicePath, root: cloned.root };
    return cloned;
  }

  /** Keeps what the NAS serves; answers the URL the compute host attaches. */
  private keepExport(exported: ExportInfo): string {
    const { kind, target, url, initiators } = exported;
    this.s.export = { kind, target, url, initiators };
    return url;
  }

  private undoClone(nas: ReturnType<Volume['nas']>): UndoStep {
    const s = this.s;
    return {
      what: 'destroy clone',
      run: async () => nas.volumeDestroy({ volume: s.volume }).then(() => delete s.storage),
    };
  }

  private undoExport(nas: ReturnType<Volume['nas']>): UndoStep {
    const s = this.s;
    return { what: 'unexport', run: async () => nas.volumeUnexport({ volume: s.volume }).then(() => delete s.export) };
  }

  async pull(by: string): Promise<PullResult> {
    const s = this.s;
    const sync = s.sync!;
    const back = s.phase;
    this.enter('syncing-to-nas', s.reason);
    try {
      const snapshot = snapshotAt(new Date());
      const result = patched(SYNC_OVER_NETWORK)
        ? await pullOverNetwork(s, this.nas(s.nas!), this.compute(s.computeHost!), snapshot)
        : await this.nas(s.nas!).volumePull({
            volume: s.volume,
            computeHost: s.computeHost!,
            nodeRoot: sync.nodeRoot!,
            snapshot,
            ...rate(s.speeds.upload),
          });
      sync.lastSyncAt = new Date().toISOString();
      sync.lastSnapshot = result.snapshot;
      sync.lastDurationMs = result.durationMs;
      sync.failures = 0;
      delete sync.lastError;
      this.record(
        by,
        'sync',
        `${result.snapshot}${result.from ? ` from ${result.from}` : ''} in ${result.durationMs} ms`,
      );
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
    if (s.phase === 'unmapped')
      return { volume: s.volume, phase: s.phase, changed: false, message: `${s.volume} is not mapped: nothing to do` };
    // A volume left in error by a step that failed (an unexport while the NAS was down) is finished
    // by the next unmap: each step looks before it acts, and only what is still there is undone.
    const resume = s.phase === 'error' && !!s.computeHost && !!s.nas && patched(UNMAP_FINISHES_ERROR);
    if (s.phase !== 'mapped' && !resume)
      throw ApplicationFailure.nonRetryable(
        `${s.volume} is ${s.phase}${s.reason ? ` (${s.reason})` : ''}; see imgflow clean`,
        'InputError',
      );
    // The node's copy is the only copy of its newest writes: it goes only after a final pull succeeded
    // (in error, that pull was done already, or the map that failed never served a VM).
    if (s.sync && !resume) await this.pull(by);
    if (resume) this.record(by, 'unmap-resumed', s.reason ?? 'error');
    this.enter('unmapping');
    const url = resume
      ? (s.attachment?.device ?? s.attachment?.url)
      : (s.attachment?.device ?? s.attachment?.url ?? s.export?.url);
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
    return {
      volume: s.volume,
      phase: s.phase,
      changed: true,
      message: `${s.volume} unmapped from ${s.computeHost}; clone kept on ${s.nas}`,
    };
  }

  /**
   * The staged base a map takes instead of the one asked: only for an unmapped volume, on its own
   * NAS, asked for its current base or the staged one (a map by the channel it follows resolves to
   * either, whether or not the channel has moved yet).
   */
  stagedFor(r: MapRequest): StagedBase | undefined {
    const { next, base, phase, nas } = this.s;
    if (!next || phase !== 'unmapped' || r.nas !== nas || r.base?.image !== next.image) return undefined;
    return r.base.version === base?.version || r.base.version === next.version ? next : undefined;
  }

  /**
   * A map of a volume with a staged base: the current clone is set aside on the NAS (kept, with the
   * writes it holds) and the map clones the staged base. Anything else maps as asked.
   */
  private async applyStaged(r: MapRequest): Promise<MapRequest> {
    const next = this.stagedFor(r);
    if (!next) return r;
    const s = this.s;
    const base: BaseVersion = { image: next.image, version: next.version, artifact: next.artifact, ...originOf(next) };
    if (s.storage && s.base) {
      const aside = `${s.volume}.${s.base.version}.${timeStamp(new Date())}`.toLowerCase();
      await this.nas(s.nas!).volumeSetAside({ volume: s.volume, aside });
      this.record(r.by, 'set-aside', `clone of ${s.base.image}:${s.base.version} kept on ${s.nas} as ${aside}`);
      delete s.storage;
    }
    delete s.next;
    this.record(r.by, 'staged-base', `${base.image}:${base.version} staged by ${next.by} is mapped now`);
    return { ...r, base };
  }

  validateStage(r: StageRequest): void {
    checkUser('by', r.by);
    checkBaseNames(r.base);
    const s = this.s;
    if (s.phase === 'deleted' || !s.base || !s.nas)
      throw new InputError('volume', `a volume cloned from an image (${s.volume} is ${s.phase})`, s.volume);
    if (r.base.image !== s.base.image)
      throw new InputError('image', `${s.base.image} (the image ${s.volume} is cloned from)`, r.base.image);
    checkBaseStored(r.base, s.nas);
    if (r.rollout !== undefined && (typeof r.rollout !== 'string' || !/^rollout-[a-z0-9._@-]{1,120}$/.test(r.rollout)))
      throw new InputError('rollout', 'a rollout workflow id', r.rollout);
    const heading = s.next?.version ?? s.base.version;
    if (r.expect !== undefined && r.expect !== heading && r.base.version !== heading)
      throw new InputError(
        'volume',
        `a volume whose next map clones ${r.expect} (${s.volume}'s clones ${heading}: it moved since)`,
        s.volume,
      );
  }

  /** Records the base the next map clones; the volume's own base clears what was staged. Nothing mapped changes. */
  stage(r: StageRequest): StageResult {
    this.validateStage(r);
    const s = this.s;
    const before = s.next?.version;
    const same = r.base.version === s.base!.version;
    if (same) delete s.next;
    else
      s.next = {
        ...r.base,
        by: r.by,
        at: new Date().toISOString(),
        ...(r.rollout ? { rollout: r.rollout } : {}),
      };
    const changed = before !== s.next?.version;
    const message = same
      ? `${s.volume} stays on ${s.base!.version}${before ? ` (${before} no longer staged)` : ''}`
      : `${s.volume} runs ${s.base!.version}; its next map clones ${r.base.version}${s.phase === 'unmapped' ? '' : ` (${s.phase} now: nothing changes until it is unmapped)`}`;
    if (changed) this.record(r.by, same ? 'unstage' : 'stage', message);
    return {
      volume: s.volume,
      phase: s.phase,
      current: s.base!.version,
      ...(s.next ? { next: s.next.version } : {}),
      changed,
      message,
    };
  }

  validateDelete(by: string): void {
    checkUser('by', by);
    if (this.s.phase !== 'unmapped')
      throw new InputError(
        'volume',
        `an unmapped volume to delete (${this.s.volume} is ${this.s.phase}; unmap it first)`,
        this.s.volume,
      );
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
    return {
      volume: s.volume,
      phase: s.phase,
      changed: true,
      message: `${s.volume} cleaned${notes.length ? `; ${notes.join('; ')}` : ''}`,
    };
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
