/**
 * The contract of a subscription: its updates, signal and queries, its sync child's input and
 * result, and the types they carry; what the CLI imports. The rules behind them are in
 * subscription.ts, the wiring in workflow.ts, the sync in sync-workflow.ts.
 */
import type { EventEnvelope } from '../../common/events.js';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { HistoryEntry } from '../../common/lineage.js';
import { checkName } from '../../common/names.js';
import type { SubscriptionConfig } from '../../common/subscription.js';

export type { SubscriptionConfig } from '../../common/subscription.js';

export const subscriptionWorkflowId = (name: string) => `subscription-${checkName('subscription', name)}`;
export const subscriptionScheduleId = subscriptionWorkflowId;

export type ImageAction =
  'add' | 'update' | 'metadata' | 'expire' | 'offer' | 'refuse' | 'delete' | 'stage' | 'unstage';

export interface ImageOutcome {
  identifier: string;
  action: ImageAction;
  ok: boolean;
  title?: string;
  imageVersion?: string;
  registryId?: number;
  registryName?: string;
  /** Why it failed, or what was left for later (an image still in use). */
  note?: string;
}

/** An expired image waiting until nothing uses it, to be deleted. */
export interface ParkedImage {
  id: number;
  name: string;
  identifier: string;
}

/** An image a staged sync registered under `<id>+STAGED`, private to the admin, for `adopt`. */
export interface StagedImage {
  identifier: string;
  imageVersion: string;
  sha512: string;
  registryId: number;
  registryName: string;
}

export interface PlanReport {
  add: string[];
  update: string[];
  metadata: string[];
  expire: { identifier: string; from: string }[];
  unchanged: string[];
  /** New images the policy keeps out (subscribe: until adopted; refuse: for good). */
  offered: string[];
  refused: string[];
  /** New images whose name another image holds (absent from reports made before it existed). */
  taken?: string[];
}

export interface SyncInput {
  subscription: SubscriptionConfig;
  lastAppliedVersion?: string;
  /**
   * dry-run: verify, stage each new or changed image under `<id>+STAGED` and report;
   * discard-staged: remove the staged images of `stagedList` (unsubscribe, refused list).
   */
  mode: 'apply' | 'dry-run' | 'discard-staged';
  /** Adopting a staged report: the list must still be this version. */
  expectVersion?: string;
  /** Offered images the site takes now. */
  adoptOffered?: boolean;
  /** Adopting: swap in the staged images instead of registering anew. */
  useStaged?: boolean;
  /** The list whose staged images `discard-staged` removes. */
  stagedList?: string;
  parked: ParkedImage[];
}

export interface SyncResult {
  listIdentifier: string;
  listVersion: string;
  verified: boolean;
  applied: boolean;
  /** The list had expired: its images were expired and nothing else was applied. */
  expired?: string;
  report: PlanReport;
  outcomes: ImageOutcome[];
  /** Expired images still in use; a later sync tries again. */
  parked: ParkedImage[];
  /** Images left under `<id>+STAGED` at the end of the run. */
  staged?: StagedImage[];
}

export type ApplianceState = 'registered' | 'updated' | 'expired' | 'deleted' | 'offered' | 'refused' | 'failed';

export interface Appliance {
  subscription: string;
  identifier: string;
  title?: string;
  imageVersion?: string;
  listVersion: string;
  state: ApplianceState;
  registryName?: string;
  registryId?: number;
  lastChange: string;
  note?: string;
}

export type SyncStatus = 'applied' | 'partial' | 'expired' | 'staged' | 'refused' | 'failed' | 'skipped';

export interface SyncOutcome {
  run: number;
  at: string;
  by: string;
  status: SyncStatus;
  listVersion?: string;
  reason?: string;
  report?: PlanReport;
  outcomes?: ImageOutcome[];
}

export interface StagedReport {
  listVersion: string;
  /** The list the staged images belong to (a staged subscription may not have applied one yet). */
  listIdentifier?: string;
  at: string;
  report: PlanReport;
  /** The images waiting under `<id>+STAGED` for `adopt`. */
  images?: StagedImage[];
}

export interface SubscriptionState {
  config: SubscriptionConfig;
  lastAppliedVersion?: string;
  images: Record<string, Appliance>;
  parked: ParkedImage[];
  staged?: StagedReport;
  lastSync?: SyncOutcome;
  history: HistoryEntry[];
  seq: number;
  runs: number;
}

export interface SubscriptionInput {
  config: SubscriptionConfig;
  state?: SubscriptionState;
  /** Events the run before held back while it continued as new: this run sends them first. */
  events?: EventEnvelope[];
  maxHistoryEvents?: number;
}

export interface SubscriptionView {
  config: SubscriptionConfig;
  lastAppliedVersion?: string;
  staged?: StagedReport;
  lastSync?: SyncOutcome;
  syncing: boolean;
  /** Appliances the registry holds under their identifiers now. */
  images: number;
  parked: ParkedImage[];
  historyEntries: number;
}

export interface SyncRequest {
  by: string;
  reason: string;
  skipIfBusy?: boolean;
}

export const syncUpdate = defineUpdate<SyncOutcome, [{ by: string }]>('sync');
export const adoptUpdate = defineUpdate<SyncOutcome, [{ by: string }]>('adopt');
export const unsubscribeUpdate = defineUpdate<SubscriptionView, [{ by: string; reason?: string }]>('unsubscribe');
/** From the schedule and from vmcatcher events: fire and forget; bad ones are recorded and dropped. */
export const syncRequestSignal = defineSignal<[SyncRequest]>('syncRequest');
export const describeQuery = defineQuery<SubscriptionView>('describe');
export const appliancesQuery = defineQuery<Appliance[]>('appliances');
export const historyQuery = defineQuery<HistoryEntry[], [{ last?: number }]>('history');
