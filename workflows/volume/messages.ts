/**
 * The contract of a volume: its updates and query and the types they carry, what the CLI imports
 * to talk to it. The rules behind them are in volume.ts, the wiring in workflow.ts.
 */
import type { EventEnvelope } from '../../common/events.js';
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { PullResult } from '../../activities/nas/volumes.js';
import type { BaseVersion, MapRequest, VolumeAttrs, VolumeOrigin } from '../../common/volume.js';
import { checkName } from '../../common/names.js';

export type { BaseVersion, MapRequest, VolumeAttrs } from '../../common/volume.js';

export type VolumePhase =
  'unmapped' | 'mapping' | 'mapped' | 'syncing-to-node' | 'syncing-to-nas' | 'unmapping' | 'error' | 'deleted';

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
  /** The channel, tag or pack the base was chosen by (the fleet view compares it with the lineage now). */
  origin?: VolumeOrigin;
  /**
   * The base the volume's next map clones instead (a rollout staged it): the running disk is never
   * touched; at the next map of this base or the staged one, the current clone is set aside on the
   * NAS (kept, never destroyed) and a new clone of this base made.
   */
  next?: StagedBase;
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
  /** Entries recorded in all (absent in states saved before events): numbers the volume's events. */
  seq?: number;
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

export type StagedBase = BaseVersion & { by: string; at: string; rollout?: string };

export interface StageRequest {
  by: string;
  /** The base the next map clones; the volume's own base clears what was staged. */
  base: BaseVersion;
  /** The version the caller saw the volume's next map clone (the staged one, else its own): refused when it moved since. */
  expect?: string;
  /** The rollout that asks (its workflow id), recorded with the staged base. */
  rollout?: string;
}

export interface StageResult {
  volume: string;
  phase: VolumePhase;
  /** The base the volume runs now, and the one its next map clones (none: the same). */
  current?: string;
  next?: string;
  changed: boolean;
  message: string;
}

export interface VolumeInput {
  volume: string;
  state?: VolumeState;
  /** Events the run before held back while it continued as new: this run sends them first. */
  events?: EventEnvelope[];
  maxHistoryEvents?: number;
}

export const volumeWorkflowId = (volume: string) => `volume-${checkName('volume', volume)}`;

export const mapUpdate = defineUpdate<MapResult, [MapRequest]>('map');
export const unmapUpdate = defineUpdate<ChangeResult, [{ by: string; waitSeconds?: number }]>('unmap');
export const deleteUpdate = defineUpdate<ChangeResult, [{ by: string }]>('delete');
export const setAttrsUpdate = defineUpdate<VolumeView, [VolumeAttrs]>('setAttrs');
export const syncNowUpdate = defineUpdate<PullResult, [{ by: string }]>('syncNow');
export const cleanUpdate = defineUpdate<ChangeResult, [{ by: string; force: boolean; reason: string }]>('clean');
/** Stages (or clears) the base of the volume's next map: what a rollout does to a volume. */
export const stageUpdate = defineUpdate<StageResult, [StageRequest]>('stage');
export const volumeQuery = defineQuery<VolumeView>('volume');
