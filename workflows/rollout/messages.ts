/**
 * The contract of a staged rollout: its input, its progress (what `imgflow rollout` shows per
 * wave) and the update that rolls it back, what the CLI imports to talk to it. The rules are in
 * rollout.ts, the wiring in workflow.ts, the wave planning in plan.ts.
 */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { Between, Member, RolloutRequest } from '../../common/rollout.js';

export type { Between, Member, PackMember, RolloutRequest, VolumeMember } from '../../common/rollout.js';
export { rolloutWorkflowId } from '../../common/rollout.js';

/**
 * - `pending`: not reached yet; `moving`: its move is under way; `moved`: at the tag;
 * - `unchanged`: already at the tag when its turn came (nothing was done);
 * - `failed`: its move was refused or failed (the rollout stops);
 * - `returned` / `return-failed`: a rollback took it back to where it was, or could not.
 */
export type MemberState = 'pending' | 'moving' | 'moved' | 'unchanged' | 'failed' | 'returned' | 'return-failed';

export interface MemberProgress {
  member: Member;
  state: MemberState;
  /** What happened, in one line: the pack's path, the volume's staged base, or why it failed. */
  detail?: string;
  /** The order moves were made in (a counter), which a rollback undoes in reverse. */
  movedAt?: number;
}

/** `waiting`: its moves are done, the pause or gate after it is running; `stopped`: a rollback came before its last move. */
export type WaveState = 'pending' | 'moving' | 'waiting' | 'done' | 'failed' | 'cancelled' | 'stopped';

export interface WaveProgress {
  percent: number;
  state: WaveState;
  members: MemberProgress[];
  /** The pause's end or the gate's deadline while `waiting`; the gate's outcome after. */
  detail?: string;
}

/**
 * - `running` (waves, pauses, gates), `promoting` (the channel to the tag), `done`;
 * - `failed` (a move, the gate's test result or the promotion), `cancelled`;
 * - `rolling-back`, `rolled-back`, `rollback-failed` (some member could not go back: see its detail).
 */
export type RolloutPhase =
  'running' | 'promoting' | 'done' | 'failed' | 'cancelled' | 'rolling-back' | 'rolled-back' | 'rollback-failed';

export interface RolloutProgress {
  image: string;
  channel: string;
  tag: string;
  version: string;
  by: string;
  startedAt: string;
  between: Between;
  phase: RolloutPhase;
  /** The wave under way, 1-based; 0 before the first. */
  wave: number;
  waves: WaveProgress[];
  /** The channel's entry before the promotion, and the promotion once made (a rollback returns the channel). */
  channelBefore?: { tag: string; version: string };
  promoted?: boolean;
  force?: boolean;
  reason?: string;
  error?: string;
  rollback?: { by: string; reason?: string; at: string; channel?: string };
  /** Moves made so far (the counter behind `movedAt`). */
  moves: number;
}

export interface RolloutInput {
  request?: RolloutRequest;
  /** The channel's current entry when the rollout was asked (a rollback returns it there). */
  channelBefore?: { tag: string; version: string };
  /** A rollback of a rollout that has ended: its last progress, and who asks. */
  rollbackOf?: { progress: RolloutProgress; by: string; reason?: string };
}

export interface RollbackRequest {
  by: string;
  reason?: string;
}

/** Where the rollout is: each wave with its members and their state. */
export const progressQuery = defineQuery<RolloutProgress>('progress');
/** Stops the rollout where it is and takes every moved member back, newest move first, and the channel. */
export const rollbackUpdate = defineUpdate<RolloutProgress, [RollbackRequest]>('rollback');

/** A phase after which nothing more happens in this run. */
export const isFinal = (phase: RolloutPhase) =>
  ['done', 'failed', 'cancelled', 'rolled-back', 'rollback-failed'].includes(phase);
