/**
 * The lineage of one image: the single source of truth for its versions, tags, channels and
 * history. It changes only through validated Updates (a bad request is rejected before it enters
 * history), is read through Queries, and continues as new before its history grows large,
 * first handing all but its newest history entries, and the full records of removed versions, to
 * archives on the control host, so neither grows the state it carries (a removed version leaves a stub).
 * Handlers take a lock before they change anything and check their request again under it, so
 * one that waits on an activity (gc, remove, pack) never interleaves with another.
 */
import type { UpdateDefinition } from '@temporalio/common';
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { checkTag } from '../../common/lineage.js';
import { checkRoom, DEFAULT_STATE_BUDGET } from '../../common/limits.js';
import { SA } from '../../common/search-attributes.js';
import { historyFull } from '../support/continue-as-new.js';
import { failureMessage } from '../support/failures.js';
import { Lock } from '../support/lock.js';
import { handleUpdate } from '../support/updates.js';
import { Outbox } from '../events/outbox.js';
import { archiveOlderHistory, archiveRemovedVersions } from './archive.js';
import { Lineage, newLineageState } from './lineage.js';
import {
  ancestorRevokedUpdate,
  DEFAULT_KEEP_HISTORY,
  describeQuery,
  gateUpdate,
  gcSignal,
  gcUpdate,
  historyQuery,
  originsQuery,
  packUpdate,
  promoteUpdate,
  registerVersionUpdate,
  removeUpdate,
  requestBuildUpdate,
  resolveQuery,
  revocationPlanQuery,
  revokeUpdate,
  rollbackUpdate,
  standingQuery,
  stateQuery,
  tagsQuery,
  tagUpdate,
  testOfQuery,
  testResultSignal,
  testResultUpdate,
  versionQuery,
  versionsQuery,
  type LineageInput,
  type TestResultInput,
} from './messages.js';
import { gc, pack, remove } from './operations.js';
import { planPack } from './packs.js';
import { removalTargets, validateGc } from './retention.js';
import {
  checkAncestorRevoked,
  checkRevokeInput,
  markAncestorRevoked,
  originsOf,
  planRevocation,
  revokeVersion,
} from './revocation.js';
import { checkVersionIds, standing } from './standing.js';
import { historyView, resolveRef, summary, tagsPage, versionsPage } from './views.js';
import { runBuild } from './run-build.js';

/** What a state past its shed bound keeps across a continue-as-new: fewer history entries, and each channel's newest entries (the history records every one). */
const SHED_KEEP_HISTORY = 50;
const SHED_KEEP_CHANNEL = 100;

/**
 * Validator and handler for one update: the validator rejects before anything is written; the
 * handler checks again under the lock, since another handler may have changed the state meanwhile.
 */
function handle<I, O>(
  lock: Lock,
  def: UpdateDefinition<O, [I]>,
  validate: (i: I) => void,
  apply: (i: I, at: string) => O | Promise<O>,
  after: () => void,
) {
  handleUpdate(def, validate, (input: I) =>
    lock.hold(async () => {
      validate(input);
      const result = await apply(input, new Date().toISOString());
      after();
      return result;
    }),
  );
}

export async function lineageWorkflow(input: LineageInput): Promise<void> {
  const lineage = new Lineage(input.state ?? newLineageState(input.image));
  const outbox = new Outbox(() => ({ entity: 'lineage', image: lineage.state.image }), input.events);
  lineage.onRecord = (entry, context) => outbox.add(entry, context);
  const lock = new Lock();
  const maxHistory = input.maxHistoryEvents ?? 10_000;
  const keepHistory = input.keepHistory ?? DEFAULT_KEEP_HISTORY;
  const budget = input.budget ?? DEFAULT_STATE_BUDGET;
  if (input.recoveredFrom)
    lineage.record(
      'imgflow',
      'recovered',
      `the state of run ${input.recoveredFrom.runId}, which ended ${input.recoveredFrom.status} without handing it on`,
      new Date().toISOString(),
    );
  const startBytes = lineage.measure();
  // Shed once the state has grown by a quarter of the gap between the bounds in this run: a state
  // that stays large after shedding does not continue as new over and over.
  const mustShed = () =>
    lineage.bytes >= budget.shedAt && lineage.bytes - startBytes >= (budget.refuseAt - budget.shedAt) / 4;
  /** Refuses a request that would grow a state already at its refusal bound. */
  const grows =
    <I>(validate: (i: I) => void) =>
    (i: I) => {
      checkRoom(
        `the lineage of ${lineage.state.image}`,
        lineage.bytes,
        budget,
        'remove or gc versions it no longer needs',
      );
      validate(i);
    };
  const publish = () => {
    lineage.measure();
    upsertSearchAttributes([
      { key: SA.kind, value: 'lineage' },
      { key: SA.image, value: lineage.state.image },
      {
        key: SA.channels,
        value: Object.entries(lineage.state.channels).map(([name, entries]) => `${name}=${entries.at(-1)?.tag ?? ''}`),
      },
      ...(lineage.state.versions.length ? [{ key: SA.version, value: lineage.state.versions.at(-1)!.id }] : []),
    ]);
  };
  publish();

  handle(
    lock,
    registerVersionUpdate,
    grows((v) => lineage.validateRegister(v)),
    (v, at) => lineage.register(v, at),
    publish,
  );
  handle(
    lock,
    tagUpdate,
    grows((i) => lineage.validateTag(i)),
    (i, at) => lineage.tag(i, at),
    publish,
  );
  handle(
    lock,
    promoteUpdate,
    grows((i) => lineage.validatePromote(i)),
    (i, at) => {
      // A promotion the channel already has records nothing new (lineages that ran before recorded it again).
      const same = lineage.alreadyPromoted(i);
      return same && patched('promote-once') ? same : lineage.promote(i, at);
    },
    publish,
  );
  handle(
    lock,
    rollbackUpdate,
    grows((i) => lineage.validateRollback(i)),
    (i, at) => lineage.rollback(i, at),
    publish,
  );
  handle(
    lock,
    testResultUpdate,
    grows((i) => lineage.validateTestResult(i)),
    (i, at) => lineage.testResult(i, at),
    publish,
  );
  handle(
    lock,
    gateUpdate,
    grows((i) => lineage.validateGate(i)),
    (i, at) => lineage.gate(i, at),
    publish,
  );
  handle(
    lock,
    revokeUpdate,
    grows((i) => checkRevokeInput(lineage, i)),
    (i, at) => {
      if (patched('revoke-follows-lineage')) return revokeVersion(lineage, i, at);
      // Lineages that revoked before revocation followed the lineage marked the version only.
      const plan = planRevocation(lineage, { version: i.version, keepChannels: true });
      return { ...plan, revoked: lineage.revoke(i, at).revoked!, changed: true };
    },
    publish,
  );
  handle(
    lock,
    ancestorRevokedUpdate,
    grows((i) => checkAncestorRevoked(lineage, i)),
    (i, at) => markAncestorRevoked(lineage, i, at),
    publish,
  );
  // gc and remove shrink the state: they stay open when it is full.
  handle(
    lock,
    gcUpdate,
    (i) => validateGc(i),
    (i, at) => gc(lineage, i, at),
    publish,
  );
  handle(
    lock,
    removeUpdate,
    (i) => void removalTargets(lineage, i),
    (i, at) => remove(lineage, i, at),
    publish,
  );
  handle(
    lock,
    packUpdate,
    grows((i) => void planPack(lineage, i)),
    (i, at) => pack(lineage, i, at),
    publish,
  );
  // Other systems (a CI job that booted a test node) report by signal; a bad one is dropped and
  // recorded, unless the state is full, when it is only logged.
  setHandler(testResultSignal, (i) => {
    const at = new Date().toISOString();
    try {
      grows((r: TestResultInput) => lineage.validateTestResult(r))(i);
      lineage.testResult(i, at);
    } catch (err) {
      if (lineage.bytes >= budget.refuseAt)
        log.warn('testResult signal dropped', { image: lineage.state.image, error: (err as Error).message });
      else
        lineage.record(
          typeof i?.by === 'string' ? i.by : 'unknown',
          'rejected-signal',
          `testResult: ${(err as Error).message}`,
          at,
        );
    }
    lineage.measure();
  });
  // The daily schedule's gc: a failure is recorded, never thrown.
  setHandler(gcSignal, (i) =>
    lock.hold(async () => {
      const at = new Date().toISOString();
      try {
        validateGc(i);
        await gc(lineage, i, at);
        publish();
      } catch (err) {
        lineage.record(typeof i?.by === 'string' ? i.by : 'unknown', 'gc-failed', failureMessage(err), at);
      }
    }),
  );
  // Answers sized for a person: the lists that grow with the lineage are paged; only `state` (for recovery) is whole.
  setHandler(describeQuery, () => summary(lineage.state));
  setHandler(versionsQuery, (request) => versionsPage(lineage.state, request));
  setHandler(tagsQuery, (request) => tagsPage(lineage.state, request));
  setHandler(resolveQuery, (request) => resolveRef(lineage.state, request?.ref));
  setHandler(versionQuery, (id) => lineage.version(id));
  setHandler(historyQuery, (request) => historyView(lineage.state, request));
  setHandler(stateQuery, () => lineage.state);
  setHandler(testOfQuery, (tag) => lineage.state.tests[checkTag('tag', tag)] ?? null);
  setHandler(standingQuery, (ids) => standing(lineage.state, checkVersionIds(ids)));
  setHandler(revocationPlanQuery, (i) => planRevocation(lineage, i));
  setHandler(originsQuery, () => originsOf(lineage));

  handle(
    lock,
    requestBuildUpdate,
    grows((r) => lineage.validateBuild(r)),
    (r, at) => lineage.enqueueBuild(r, at),
    publish,
  );

  // One build at a time per image, in the order asked; continue as new only between builds.
  for (;;) {
    await condition(() => lineage.state.builds.length > 0 || historyFull(maxHistory) || mustShed());
    const next = lineage.state.builds[0];
    if (!next) break;
    await runBuild(lineage, next);
    lineage.state.builds.shift();
    publish();
  }
  // A state past its shed bound hands on less than usual; one below it hands on the same as before the bound existed.
  const shedding = lineage.measure() >= budget.shedAt;
  const keep = shedding ? Math.min(keepHistory, SHED_KEEP_HISTORY) : keepHistory;
  // Lineages that continued as new before the archive existed carried their whole history.
  if (lineage.state.history.length > keep && patched('archive-history')) await archiveOlderHistory(lineage, keep);
  // Lineages that continued as new before the version archive existed carried every full record.
  if (lineage.unarchived().length && patched('archive-versions')) await archiveRemovedVersions(lineage);
  if (shedding) lineage.trimChannels(SHED_KEEP_CHANNEL);
  outbox.hold();
  await condition(() => allHandlersFinished() && outbox.settled);
  await continueAsNew<typeof lineageWorkflow>({
    ...input,
    recoveredFrom: undefined,
    state: lineage.state,
    events: outbox.handOver(),
  });
}
