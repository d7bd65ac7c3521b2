/** The rules of a subscription as plain code over its state: what a sync's result changes, and what its queries show. */
import { ApplicationFailure } from '@temporalio/workflow';
import { clip } from '../../common/limits.js';
import { checkUser } from '../../common/lineage.js';
import { InputError } from '../../common/names.js';
import { checkSubscriptionConfig, type SubscriptionConfig } from '../../common/subscription.js';
import { appendHistory, type RecordListener } from '../support/history.js';
import type {
  Appliance,
  ApplianceState,
  ImageAction,
  ImageOutcome,
  PlanReport,
  SubscriptionState,
  SubscriptionView,
  SyncInput,
  SyncOutcome,
  SyncResult,
  SyncStatus,
} from './messages.js';

/** Whether the registry holds the appliance under its identifier now (a failed swap leaves the old image there). */
function inRegistry(a: Appliance): boolean {
  return (
    a.registryId !== undefined &&
    a.registryName === a.identifier &&
    (a.state === 'registered' || a.state === 'updated' || a.state === 'failed')
  );
}

/** Staging outcomes leave the site's appliances as they are. */
const APPLIED_STATE: Record<Exclude<ImageAction, 'stage' | 'unstage'>, ApplianceState> = {
  add: 'registered',
  update: 'updated',
  metadata: 'updated',
  expire: 'expired',
  delete: 'deleted',
  offer: 'offered',
  refuse: 'refused',
};

/** History entries a subscription keeps (about four syncs a day for most of a year). */
const HISTORY_KEEP = 1000;

/** The rules of a subscription as plain code over its state; the workflow wires them to messages. */
export class Subscription {
  constructor(readonly state: SubscriptionState) {}

  /** Only the newest entries stay, so the state it carries stays bounded. */
  record(by: string, op: string, detail: string, at: string): void {
    const entry = appendHistory(this.state, { at, by, op, detail }, HISTORY_KEEP);
    this.onRecord?.(entry);
  }

  onRecord?: RecordListener;

  validateAdopt(input: { by: string }): void {
    checkUser('by', input?.by);
    const offered = Object.values(this.state.images).some((i) => i.state === 'offered');
    if (!this.state.staged && !offered)
      throw new InputError(
        'subscription',
        `a staged report or offered images to adopt (${this.state.config.name} has none: run sync first)`,
        this.state.config.name,
      );
  }

  syncInput(mode: 'apply' | 'dry-run', adopting: boolean): SyncInput {
    const { config, lastAppliedVersion, staged, parked } = this.state;
    return {
      subscription: config,
      mode,
      parked,
      ...(lastAppliedVersion !== undefined ? { lastAppliedVersion } : {}),
      ...(adopting && staged ? { expectVersion: staged.listVersion } : {}),
      ...(adopting ? { adoptOffered: true } : {}),
      ...(adopting && staged?.images?.length ? { useStaged: true } : {}),
    };
  }

  /** What `discard-staged` needs, when something is staged. */
  discardInput(): SyncInput | undefined {
    const { config, staged, parked } = this.state;
    if (!staged?.images?.length || staged.listIdentifier === undefined) return undefined;
    return { subscription: config, mode: 'discard-staged', stagedList: staged.listIdentifier, parked };
  }

  /** The staged images are gone (or parked, when a VM still used one). */
  discarded(by: string, reason: string, result: SyncResult, at: string): void {
    this.state.parked = result.parked;
    delete this.state.staged;
    const failed = result.outcomes.filter((o) => !o.ok);
    this.record(
      by,
      'unstaged',
      `${reason}: ${result.outcomes.map((o) => `${o.identifier} ${o.note ?? ''}`.trim()).join(', ')}${failed.length ? `; failed: ${failed.length}` : ''}`,
      at,
    );
  }

  applyResult(run: number, by: string, result: SyncResult, at: string): SyncOutcome {
    const s = this.state;
    const failed = result.outcomes.filter((o) => !o.ok);
    const failures = failed.length ? `; failed: ${failed.map((f) => `${f.identifier} (${f.note})`).join(', ')}` : '';
    if (!result.applied) {
      s.staged = {
        listVersion: result.listVersion,
        listIdentifier: result.listIdentifier,
        at,
        report: result.report,
        images: result.staged ?? [],
      };
      s.parked = result.parked;
      this.record(
        by,
        'staged',
        `list ${result.listVersion}: ${summary(result.report)}; ${result.staged?.length ?? 0} images staged${failures}`,
        at,
      );
      return {
        run,
        at,
        by,
        status: 'staged',
        listVersion: result.listVersion,
        report: result.report,
        ...(result.outcomes.length ? { outcomes: result.outcomes } : {}),
      };
    }
    s.config = { ...s.config, identifier: s.config.identifier ?? result.listIdentifier };
    s.lastAppliedVersion = result.listVersion;
    s.parked = result.parked;
    // A swap that failed put its staged image back: a second adopt tries again.
    if (result.staged?.length)
      s.staged = {
        listVersion: result.listVersion,
        listIdentifier: result.listIdentifier,
        at,
        report: result.report,
        images: result.staged,
      };
    else delete s.staged;
    for (const outcome of result.outcomes)
      if (outcome.action !== 'stage' && outcome.action !== 'unstage')
        this.applyOutcome({ ...outcome, action: outcome.action }, result.listVersion, at);
    const status: SyncStatus = failed.length ? 'partial' : result.expired ? 'expired' : 'applied';
    this.record(by, status, `list ${result.listVersion}: ${summary(result.report)}${failures}`, at);
    return {
      run,
      at,
      by,
      status,
      listVersion: result.listVersion,
      report: result.report,
      outcomes: result.outcomes,
      ...(result.expired ? { reason: result.expired } : {}),
    };
  }

  private applyOutcome(
    outcome: ImageOutcome & { action: keyof typeof APPLIED_STATE },
    listVersion: string,
    at: string,
  ): void {
    const before = this.state.images[outcome.identifier];
    const appliance: Appliance = {
      ...before,
      subscription: this.state.config.name,
      identifier: outcome.identifier,
      listVersion,
      state: outcome.ok ? APPLIED_STATE[outcome.action] : 'failed',
      lastChange: at,
    };
    if (outcome.title !== undefined) appliance.title = outcome.title;
    // A failed swap leaves the old image in place: it keeps its version.
    if (outcome.imageVersion !== undefined && outcome.ok) appliance.imageVersion = outcome.imageVersion;
    if (outcome.registryName !== undefined) appliance.registryName = outcome.registryName;
    if (outcome.registryId !== undefined) appliance.registryId = outcome.registryId;
    if (outcome.note !== undefined) appliance.note = clip(outcome.note);
    else delete appliance.note;
    this.state.images[outcome.identifier] = appliance;
  }

  refused(run: number, by: string, reason: string, at: string): SyncOutcome {
    this.record(by, 'refused', reason, at);
    return { run, at, by, status: 'refused', reason };
  }

  view(syncing: boolean): SubscriptionView {
    const s = this.state;
    return {
      config: s.config,
      ...(s.lastAppliedVersion !== undefined ? { lastAppliedVersion: s.lastAppliedVersion } : {}),
      ...(s.staged ? { staged: s.staged } : {}),
      ...(s.lastSync ? { lastSync: s.lastSync } : {}),
      syncing,
      images: Object.values(s.images).filter(inRegistry).length,
      parked: s.parked,
      historyEntries: s.history.length,
    };
  }
}

function summary(report: PlanReport): string {
  const parts: [string, number][] = [
    ['add', report.add.length],
    ['update', report.update.length],
    ['metadata', report.metadata.length],
    ['expire', report.expire.length],
    ['offered', report.offered.length],
    ['refused', report.refused.length],
    ['taken', report.taken?.length ?? 0],
    ['unchanged', report.unchanged.length],
  ];
  return parts.map(([k, n]) => `${n} ${k}`).join(', ');
}

export function newSubscriptionState(config: SubscriptionConfig): SubscriptionState {
  return { config: checkSubscriptionConfig(config), images: {}, parked: [], history: [], seq: 0, runs: 0 };
}

/** Bad settings fail the workflow with the field named; thrown as they are, they would retry forever. */
export function startingState(config: SubscriptionConfig): SubscriptionState {
  try {
    return newSubscriptionState(config);
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, (err as Error).name);
  }
}
