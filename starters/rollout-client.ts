/**
 * The client side of staged rollouts: find the members of an image's channel (its packs on the
 * channel's version, the volumes mapped from the channel), start the rollout, read its progress,
 * cancel it and roll it back, and show it as a table per wave.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { VersionRecord } from '../common/lineage.js';
import { InputError } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import {
  checkRolloutRequest,
  rolloutWorkflowId,
  type Between,
  type Member,
  type RolloutRequest,
} from '../common/rollout.js';
import { SA } from '../common/search-attributes.js';
import type { BaseVersion } from '../common/volume.js';
import {
  progressQuery,
  rollbackUpdate,
  type RolloutInput,
  type RolloutProgress,
} from '../workflows/rollout/messages.js';
import { describeMove } from '../workflows/rollout/plan.js';
import { rolloutWorkflow } from '../workflows/rollout/workflow.js';
import { answered, sendUpdate } from './answers.js';
import { describeLineage, fullVersion } from './lineage-client.js';
import { formatTable } from './output.js';
import { sdk } from './sdk.js';
import { listVolumes } from './volume-client.js';

export interface RolloutAsk {
  by: string;
  image: string;
  channel: string;
  tag: string;
  waves: number[];
  between: Between;
  force?: boolean;
  reason?: string;
}

export function rolloutHandle(client: Client, image: string, channel: string): WorkflowHandle<typeof rolloutWorkflow> {
  return client.workflow.getHandle(rolloutWorkflowId(image, channel));
}

/** The base a volume on `nas` clones for a version: its qcow2 (else raw) there. */
function baseOn(v: VersionRecord, image: string, nas: string, origin: { channel?: string }): BaseVersion {
  const artifact = ['qcow2', 'raw'].map((f) => v.artifacts.find((a) => a.host === nas && a.format === f)).find(Boolean);
  if (!artifact)
    throw new InputError(
      '--tag',
      `a version stored on ${nas}, the NAS of the channel's volumes (${image}:${v.id} is on ${[...new Set(v.artifacts.map((a) => a.host))].join(', ') || 'none'})`,
      v.id,
    );
  return {
    image,
    version: v.id,
    artifact: { format: artifact.format, host: artifact.host, path: artifact.path },
    ...origin,
  };
}

/**
 * What the rollout moves: the packs publishing the channel's current version (its node groups)
 * and the volumes mapped from the channel, each with where it is and where it goes.
 */
export async function planRequest(client: Client, ask: RolloutAsk): Promise<RolloutInput> {
  const { image, channel, tag } = ask;
  const summary = await describeLineage(client, image);
  const current = summary.channels[channel]?.current;
  if (!current) throw new InputError('--channel', `a channel of ${image} with a current entry`, channel);
  const target = await fullVersion(client, image, tag);
  if (target.revoked || target.removed)
    throw new InputError('--tag', `a tag of a version that is stored and not revoked (${tag} is ${target.id})`, tag);
  if (current.version === target.id)
    throw new InputError(
      '--tag',
      `a tag of another version than ${channel}'s (${channel} is on ${target.id} already)`,
      tag,
    );
  const packs: Member[] = Object.entries(summary.packs)
    .filter(([, p]) => p.version === current.version)
    .map(([name, p]) => ({
      kind: 'pack',
      name,
      host: p.host,
      packKind: p.kind ?? 'netboot',
      from: { tag: p.tag, version: p.version },
      to: { tag, version: target.id },
    }));
  const volumes = (await listVolumes(client)).filter(
    (v) =>
      v.base?.image === image && v.origin?.channel === channel && (v.next ?? v.base).version !== target.id && v.nas,
  );
  const versions = new Map<string, VersionRecord>([[target.id, target]]);
  const record = async (id: string) => {
    if (!versions.has(id)) versions.set(id, await fullVersion(client, image, id));
    return versions.get(id)!;
  };
  const moved: Member[] = [];
  for (const v of volumes)
    moved.push({
      kind: 'volume',
      name: v.volume,
      host: v.nas!,
      // Where its next map goes now (a base staged before, else its own): where a rollback returns it.
      from: baseOn(await record((v.next ?? v.base!).version), image, v.nas!, { channel }),
      to: baseOn(target, image, v.nas!, { channel }),
    });
  const request: RolloutRequest = {
    by: ask.by,
    image,
    channel,
    tag,
    version: target.id,
    waves: ask.waves,
    between: ask.between,
    members: [...packs, ...moved],
    ...(ask.force ? { force: true } : {}),
    ...(ask.reason ? { reason: ask.reason } : {}),
  };
  return { request: checkRolloutRequest(request), channelBefore: { tag: current.tag, version: current.version } };
}

/** Starts the rollout; one already running on the channel is refused, naming it. */
export async function startRollout(
  client: Client,
  input: RolloutInput,
): Promise<WorkflowHandle<typeof rolloutWorkflow>> {
  const r = input.request ?? input.rollbackOf!.progress;
  const workflowId = rolloutWorkflowId(r.image, r.channel);
  try {
    return await client.workflow.start(rolloutWorkflow, {
      workflowId,
      taskQueue: WORKFLOW_QUEUE,
      args: [input],
      workflowIdConflictPolicy: 'FAIL',
      typedSearchAttributes: [
        { key: SA.kind, value: 'rollout' },
        { key: SA.image, value: r.image },
        { key: SA.version, value: r.version },
        { key: SA.channels, value: [r.channel] },
      ],
      staticSummary: input.rollbackOf
        ? `Rollback of the rollout of ${r.image}@${r.channel} to ${r.tag}`
        : `Rollout of ${r.image}@${r.channel} to ${r.tag} (${r.version}) in waves of ${input.request!.waves.join('%, ')}%`,
    });
  } catch (err) {
    if (err instanceof sdk.WorkflowExecutionAlreadyStartedError)
      throw new InputError(
        '--channel',
        `a channel with no rollout running (${workflowId} is; see imgflow rollout status ${r.image} --channel ${r.channel})`,
        r.channel,
      );
    throw err;
  }
}

/** The rollout's progress, running or ended (an ended run is replayed by an orchestrator to answer). */
export async function rolloutProgress(client: Client, image: string, channel: string): Promise<RolloutProgress> {
  const handle = rolloutHandle(client, image, channel);
  try {
    await handle.describe();
  } catch (err) {
    if (err instanceof sdk.WorkflowNotFoundError)
      throw new InputError('--channel', `a channel of ${image} with a rollout (none was started)`, channel);
    throw err;
  }
  return answered(client, `the rollout of ${image}@${channel}`, () => handle.query(progressQuery), [WORKFLOW_QUEUE]);
}

/** Cancels a running rollout: it stops where it is (a member mid-move finishes first). */
export async function cancelRollout(client: Client, image: string, channel: string): Promise<RolloutProgress> {
  const handle = rolloutHandle(client, image, channel);
  const { status } = await handle.describe().catch((err: unknown) => {
    if (err instanceof sdk.WorkflowNotFoundError)
      throw new InputError('--channel', `a channel of ${image} with a rollout (none was started)`, channel);
    throw err;
  });
  if (status.name !== 'RUNNING')
    throw new InputError('--channel', `a channel with a rollout running (it ended ${status.name})`, channel);
  await handle.cancel();
  return waitForEnd(client, image, channel);
}

/**
 * Rolls back the rollout of the channel: a running one stops and takes its moves back; one that
 * has ended is taken back by a new run under the same id, from the progress it ended with.
 */
export async function rollbackRollout(
  client: Client,
  image: string,
  channel: string,
  ask: { by: string; reason?: string },
): Promise<WorkflowHandle<typeof rolloutWorkflow>> {
  const handle = rolloutHandle(client, image, channel);
  const progress = await rolloutProgress(client, image, channel);
  const { status } = await handle.describe();
  if (status.name === 'RUNNING') {
    await sendUpdate(client, handle, `the rollout of ${image}@${channel}`, rollbackUpdate, ask);
    return handle;
  }
  if (progress.phase === 'rolled-back' || progress.phase === 'rolling-back')
    throw new InputError(
      '--rollout',
      `a rollout not rolled back yet (${image}@${channel}'s last one is ${progress.phase})`,
      channel,
    );
  return startRollout(client, { rollbackOf: { progress, by: ask.by, ...(ask.reason ? { reason: ask.reason } : {}) } });
}

/** Reads the progress until the rollout ends, calling `each` with every reading that changed. */
export async function waitForEnd(
  client: Client,
  image: string,
  channel: string,
  each?: (p: RolloutProgress) => void,
  everyMs = 1000,
): Promise<RolloutProgress> {
  let last = '';
  for (;;) {
    const p = await rolloutProgress(client, image, channel);
    const now = JSON.stringify(p);
    if (now !== last) each?.(p);
    last = now;
    // An ended run's progress is final: read once more, as the run closed with it.
    const { status } = await rolloutHandle(client, image, channel).describe();
    if (status.name !== 'RUNNING') {
      const settled = await rolloutProgress(client, image, channel);
      if (JSON.stringify(settled) !== last) each?.(settled);
      return settled;
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The rollout for people: a line for the whole, then a table of every member by wave. */
export function formatRollout(p: RolloutProgress): string {
  const between =
    p.between.kind === 'pause'
      ? `a pause of ${p.between.seconds} s`
      : p.between.kind === 'gate'
        ? 'a passed test result'
        : 'nothing';
  const head = `${p.image}@${p.channel} -> ${p.tag} (${p.version}): ${p.phase}${p.error ? `: ${p.error}` : ''}; between waves: ${between}`;
  const waves = p.waves.map(
    (w, i) =>
      `wave ${i + 1} (${w.percent}%): ${w.state}, ${w.members.filter((m) => m.state === 'moved' || m.state === 'unchanged').length}/${w.members.length} moved${w.detail ? `; ${w.detail}` : ''}`,
  );
  const rows = p.waves.flatMap((w, i) =>
    w.members.map((m) => ({
      wave: i + 1,
      kind: m.member.kind,
      name: m.member.name,
      host: m.member.host,
      ...describeMove(m.member),
      state: m.state,
      detail: m.detail ?? '',
    })),
  );
  const table = rows.length
    ? formatTable(
        rows,
        ['wave', 'kind', 'name', 'host', 'from', 'to', 'state', 'detail'],
        ['WAVE', 'KIND', 'NAME', 'HOST', 'FROM', 'TO', 'STATE', 'DETAIL'],
      )
    : 'no packs or volumes follow the channel: only the channel moves';
  const channel = p.promoted
    ? `channel ${p.channel}: promoted to ${p.tag}`
    : p.rollback?.channel
      ? `channel ${p.channel}: ${p.rollback.channel}`
      : `channel ${p.channel}: on ${p.channelBefore ? `${p.channelBefore.tag} (${p.channelBefore.version})` : 'its entry'} until the last wave is done`;
  return [head, ...waves, table, channel].join('\n');
}

/** A rollout that ended short of what was asked (done for a rollout, rolled back for a rollback): exit 1, its error the one line. */
export function outcomeError(p: RolloutProgress, goal: 'done' | 'rolled-back'): Error | undefined {
  if (p.phase === goal) return undefined;
  return new Error(`rollout of ${p.image}@${p.channel} to ${p.tag} ${p.phase}${p.error ? `: ${p.error}` : ''}`);
}
