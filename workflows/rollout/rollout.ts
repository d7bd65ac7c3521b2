/**
 * The rules of a staged rollout, as a class over its progress: move each wave's members, wait
 * between waves (a durable pause, or a passed test result of the tag recorded after the wave),
 * point the channel at the tag, and on request take every moved member back, newest move first.
 * A member's move runs out of reach of cancellation, so a cancelled rollout never leaves one half
 * moved; the moves themselves are the entities' own validated updates (see activities/control/rollout.ts).
 */
import {
  CancellationScope,
  CancelledFailure,
  condition,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { RolloutActivities, StepResult } from '../../activities/control/rollout.js';
import type { Member } from '../../common/rollout.js';
import { CONTROL_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { failureMessage } from '../support/failures.js';
import type { MemberProgress, RollbackRequest, RolloutInput, RolloutProgress, WaveProgress } from './messages.js';
import { planWaves, returnOrder } from './plan.js';

const steps = proxyActivities<RolloutActivities>({
  taskQueue: CONTROL_QUEUE,
  scheduleToStartTimeout: '10m',
  startToCloseTimeout: '2h',
  retry: { initialInterval: '1s', maximumAttempts: 10, nonRetryableErrorTypes: ['InputError'] },
});

/** The progress a rollout starts with: its members split into waves, nothing moved. */
export function startProgress(input: RolloutInput, at: string): RolloutProgress {
  const r = input.request!;
  const plan = planWaves(r.members, r.waves);
  return {
    image: r.image,
    channel: r.channel,
    tag: r.tag,
    version: r.version,
    by: r.by,
    startedAt: at,
    between: r.between,
    phase: 'running',
    wave: 0,
    waves: plan.map((members, i) => ({
      percent: r.waves[i]!,
      state: 'pending',
      members: members.map((member) => ({ member, state: 'pending' })),
    })),
    ...(input.channelBefore ? { channelBefore: input.channelBefore } : {}),
    ...(r.force ? { force: true } : {}),
    ...(r.reason ? { reason: r.reason } : {}),
    moves: 0,
  };
}

/** Moves run out of reach of cancellation, so a cancelled rollout must stop itself before the next one. */
function stopIfCancelled(): void {
  if (CancellationScope.current().consideredCancelled) throw new CancelledFailure('the rollout was cancelled');
}

export class Rollout {
  rollbackAsked?: RollbackRequest;

  constructor(readonly p: RolloutProgress) {}

  get members(): MemberProgress[] {
    return this.p.waves.flatMap((w) => w.members);
  }

  publish(): void {
    const p = this.p;
    upsertSearchAttributes([
      { key: SA.kind, value: 'rollout' },
      { key: SA.image, value: p.image },
      { key: SA.version, value: p.version },
      { key: SA.channels, value: [p.channel] },
      { key: SA.state, value: p.phase },
    ]);
    const waves = p.waves.map((w, i) => {
      const moved = w.members.filter((m) => m.state === 'moved' || m.state === 'unchanged').length;
      return `wave ${i + 1} (${w.percent}%): ${w.state}, ${moved}/${w.members.length} moved${w.detail ? `; ${w.detail}` : ''}`;
    });
    setCurrentDetails(
      [
        `**${p.image}@${p.channel} -> ${p.tag} (${p.version})** ${p.phase}${p.error ? `: ${p.error}` : ''}`,
        ...waves,
      ].join('\n\n'),
    );
  }

  /** Waves, the waits between them and the promotion; stops at a failure, a cancellation or a rollback request. */
  async run(): Promise<void> {
    const p = this.p;
    try {
      for (let i = 0; i < p.waves.length && p.phase === 'running' && !this.rollbackAsked; i++) {
        p.wave = i + 1;
        if (!(await this.moveWave(p.waves[i]!))) break;
        if (i < p.waves.length - 1 && !this.rollbackAsked) await this.between(p.waves[i]!);
        else p.waves[i]!.state = 'done';
        this.publish();
      }
      if (p.phase === 'running' && !this.rollbackAsked) {
        stopIfCancelled();
        await this.promote();
      }
    } catch (err) {
      if (!isCancellation(err)) throw err;
      p.phase = 'cancelled';
      const wave = p.waves[p.wave - 1];
      if (wave && wave.state !== 'done') wave.state = 'cancelled';
      this.publish();
      throw err;
    }
  }

  private async moveWave(wave: WaveProgress): Promise<boolean> {
    wave.state = 'moving';
    this.publish();
    for (const m of wave.members) {
      if (this.rollbackAsked) {
        wave.state = 'stopped';
        return false;
      }
      stopIfCancelled();
      if (!(await this.move(m))) {
        wave.state = 'failed';
        this.fail(`${m.member.kind} ${m.member.name}: ${m.detail}`);
        return false;
      }
    }
    return true;
  }

  /** One member to the tag; cancellation waits for it to finish. */
  private async move(m: MemberProgress): Promise<boolean> {
    m.state = 'moving';
    this.publish();
    try {
      const done = await CancellationScope.nonCancellable(() => this.step(m.member, 'forward'));
      m.state = done.changed ? 'moved' : 'unchanged';
      m.detail = done.detail;
      if (done.changed) m.movedAt = ++this.p.moves;
      return true;
    } catch (err) {
      m.state = 'failed';
      m.detail = failureMessage(err);
      return false;
    } finally {
      this.publish();
    }
  }

  /** The entity update that moves a member to the tag, or back where it was. */
  private step(m: Member, way: 'forward' | 'back'): Promise<StepResult> {
    const by = way === 'forward' ? this.p.by : (this.p.rollback?.by ?? this.p.by);
    if (m.kind === 'pack')
      return steps.rolloutMovePack({
        image: this.p.image,
        name: m.name,
        kind: m.packKind,
        by,
        tag: way === 'forward' ? m.to.tag : m.from.tag,
        expect: way === 'forward' ? m.from : m.to,
      });
    return steps.rolloutStageVolume({
      volume: m.name,
      by,
      base: way === 'forward' ? m.to : m.from,
      ...(way === 'forward' ? { expect: m.from.version } : {}),
      rollout: workflowInfo().workflowId,
    });
  }

  /** The pause or gate after a wave; a rollback request ends either at once. */
  private async between(wave: WaveProgress): Promise<void> {
    const b = this.p.between;
    wave.state = 'waiting';
    if (b.kind === 'pause') {
      const until = new Date(Date.now() + b.seconds * 1000).toISOString();
      wave.detail = `pause until ${until}`;
      this.publish();
      await condition(() => this.rollbackAsked !== undefined, b.seconds * 1000);
      wave.detail = `paused ${b.seconds} s`;
    } else if (b.kind === 'gate') {
      await this.gate(wave, b.timeoutSeconds);
    }
    if (this.p.phase === 'running') wave.state = 'done';
  }

  /** Waits for a test result of the tag recorded after the wave's moves: passed goes on, failed stops. */
  private async gate(wave: WaveProgress, timeoutSeconds: number): Promise<void> {
    const after = new Date().toISOString();
    const until = new Date(Date.now() + timeoutSeconds * 1000).toISOString();
    wave.detail = `waiting for a test result of ${this.p.tag} recorded after ${after}, until ${until}`;
    this.publish();
    const wait = proxyActivities<RolloutActivities>({
      taskQueue: CONTROL_QUEUE,
      scheduleToStartTimeout: '10m',
      startToCloseTimeout: `${timeoutSeconds + 120}s`,
      heartbeatTimeout: '30s',
      retry: { initialInterval: '1s', maximumAttempts: 10, nonRetryableErrorTypes: ['GateFailed', 'GateTimeout'] },
    });
    const scope = new CancellationScope();
    const result = scope.run(() => wait.rolloutAwaitTestResult({ image: this.p.image, tag: this.p.tag, after, until }));
    try {
      const first = await Promise.race([result, condition(() => this.rollbackAsked !== undefined)]);
      if (first === undefined) {
        scope.cancel();
        await result.catch(() => undefined);
        wave.detail = 'gate left for the rollback';
        return;
      }
      wave.detail = `test passed (by ${first.by} at ${first.at})`;
    } catch (err) {
      // The rollout itself cancelled (not only the wait): that ends the run.
      if (isCancellation(err) && CancellationScope.current().consideredCancelled) throw err;
      wave.state = 'failed';
      wave.detail = failureMessage(err);
      this.fail(`gate after wave ${this.p.wave}: ${wave.detail}`);
    }
  }

  private async promote(): Promise<void> {
    const p = this.p;
    p.phase = 'promoting';
    this.publish();
    try {
      await CancellationScope.nonCancellable(() =>
        steps.rolloutPromote({
          image: p.image,
          channel: p.channel,
          tag: p.tag,
          by: p.by,
          ...(p.force ? { force: true } : {}),
          ...(p.reason ? { reason: p.reason } : {}),
        }),
      );
      p.promoted = true;
      p.phase = 'done';
    } catch (err) {
      this.fail(`promotion of ${p.channel} to ${p.tag}: ${failureMessage(err)}`);
    }
    this.publish();
  }

  private fail(error: string): void {
    this.p.phase = 'failed';
    this.p.error = error;
    this.publish();
  }

  /**
   * Takes back what the rollout did, newest first: the channel (if it was promoted), then each
   * moved member to where it was. Every step is tried; those that fail are named in their detail.
   */
  async rollBack(request: RollbackRequest): Promise<void> {
    const p = this.p;
    p.phase = 'rolling-back';
    p.rollback = {
      by: request.by,
      at: new Date().toISOString(),
      ...(request.reason ? { reason: request.reason } : {}),
    };
    this.publish();
    const reason = request.reason ?? `rollback of the rollout of ${p.tag} to ${p.channel}`;
    let failures = 0;
    await CancellationScope.nonCancellable(async () => {
      if (p.promoted) {
        try {
          const done = await steps.rolloutChannelBack({
            image: p.image,
            channel: p.channel,
            tag: p.tag,
            by: request.by,
            reason,
          });
          p.rollback!.channel = done.detail;
          p.promoted = !done.changed && p.promoted;
        } catch (err) {
          failures++;
          p.rollback!.channel = `failed: ${failureMessage(err)}`;
        }
        this.publish();
      }
      for (const m of returnOrder(this.members)) {
        if (m.state !== 'moved') continue;
        try {
          const done = await this.step(m.member, 'back');
          m.state = 'returned';
          m.detail = done.detail;
        } catch (err) {
          failures++;
          m.state = 'return-failed';
          m.detail = failureMessage(err);
        }
        this.publish();
      }
    });
    p.phase = failures ? 'rollback-failed' : 'rolled-back';
    if (failures) p.error = `${failures} step${failures === 1 ? '' : 's'} of the rollback failed (see each member)`;
    this.publish();
  }
}
