/**
 * One volume of clone-to-compute: an entity workflow per volume (`volume-<name>`) that keeps its
 * state and is its lock. Updates run one at a time (the lock is workflow state, so nothing holds
 * it once the workflow moves on); each is checked by a validator before anything is recorded.
 *
 * Map is a saga across `nas.<nas>` and `compute.<host>`: the compute host is asked for its
 * initiator first (a host that is down fails the map within the wait bound, before anything is
 * made), then clone and export to that initiator only, in one step on the NAS (or, in sync mode,
 * clone and the node receives its own copy), then attach. A failed step undoes the ones before it, in reverse.
 *
 * Sync mode pulls the node's writes back to the NAS on a durable timer; a failed pull is recorded
 * and retried, and the last success stays what it was.
 */ import { allHandlersFinished, condition, continueAsNew, setHandler } from '@temporalio/workflow';
import { checkReason, checkUser } from '../../common/lineage.js';
import { checkInt, checkName, InputError } from '../../common/names.js';
import { checkAttrs } from '../../common/volume.js';
import { Outbox } from '../events/outbox.js';
import { historyFull } from '../support/continue-as-new.js';
import { handleUpdate } from '../support/updates.js';
import {
  cleanUpdate,
  deleteUpdate,
  mapUpdate,
  setAttrsUpdate,
  stageUpdate,
  syncNowUpdate,
  unmapUpdate,
  volumeQuery,
  type VolumeInput,
  type VolumeView,
} from './messages.js';
import { newVolumeState, Volume } from './volume.js';

export async function volumeWorkflow(input: VolumeInput): Promise<VolumeView> {
  const v = new Volume(input.state ?? newVolumeState(checkName('volume', input.volume), new Date().toISOString()));
  const outbox = new Outbox(
    () => ({
      entity: 'volume',
      volume: v.s.volume,
      ...(v.s.base ? { image: v.s.base.image } : {}),
    }),
    input.events,
  );
  v.onRecord = (entry) => outbox.add(entry);
  const maxHistory = input.maxHistoryEvents ?? 5_000;
  v.publish();

  handleUpdate(
    mapUpdate,
    (r) => v.validateMap(r),
    (r) => v.exclusive(() => v.map(r)),
  );
  handleUpdate(
    unmapUpdate,
    (i) => {
      checkUser('by', i.by);
      if (i.waitSeconds !== undefined) checkInt('wait', i.waitSeconds, 0, 86_400);
    },
    (i) => v.exclusive(() => v.unmap(i.by, i.waitSeconds ?? 60)),
  );
  handleUpdate(
    deleteUpdate,
    (i) => v.validateDelete(i.by),
    (i) => v.exclusive(() => v.delete(i.by)),
  );
  handleUpdate(
    setAttrsUpdate,
    (a) => {
      checkAttrs(a);
      // Pull settings would be kept and do nothing: a volume not in sync mode has no pulls.
      const syncOnly =
        a.frequencySeconds !== undefined
          ? 'frequency'
          : a.frozen !== undefined
            ? a.frozen
              ? 'freeze'
              : 'thaw'
            : undefined;
      if (syncOnly && !v.s.sync)
        throw new InputError(
          syncOnly,
          `a volume mapped in sync mode (${v.s.volume} is not: map it with --sync)`,
          v.s.volume,
        );
    },
    async (a) => v.setAttrs(a),
  );
  handleUpdate(
    syncNowUpdate,
    (i) => {
      checkUser('by', i.by);
      if (!v.s.sync || v.s.phase !== 'mapped')
        throw new InputError(
          'volume',
          `a volume mapped in sync mode (${v.s.volume} is ${v.s.phase}${v.s.sync ? '' : ', not in sync mode'})`,
          v.s.volume,
        );
    },
    (i) =>
      v.exclusive(() =>
        v.s.sync && v.s.phase === 'mapped'
          ? v.pull(i.by)
          : Promise.reject(new InputError('volume', 'a volume mapped in sync mode', v.s.volume)),
      ),
  );
  handleUpdate(
    cleanUpdate,
    (i) => {
      checkUser('by', i.by);
      if (i.force !== true)
        throw new InputError(
          'force',
          '--force: clean skips the compute host and may leave it holding the volume',
          i.force,
        );
      checkReason('reason', i.reason);
    },
    (i) => v.exclusive(() => v.clean(i.by, i.reason)),
  );
  // A rollout stages the base of the next map: no activity, nothing mapped changes; under the
  // lock so it never interleaves with a map taking the staged base.
  handleUpdate(
    stageUpdate,
    (r) => v.validateStage(r),
    (r) => v.exclusive(async () => v.stage(r)),
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
  if (v.s.phase === 'deleted') {
    await condition(() => outbox.idle);
    return v.view();
  }
  outbox.hold();
  await condition(() => !v.busy && allHandlersFinished() && outbox.settled);
  return continueAsNew<typeof volumeWorkflow>({ ...input, state: v.s, events: outbox.handOver() });
}
