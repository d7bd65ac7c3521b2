/**
 * Revocation that follows the lineage: what revoking a version touches (its lineage's channels,
 * tags and packs, the volumes running it, the copies cloned from it into other images, however
 * many clones deep, and the pushes made of it), then the revocation with its channels' rollbacks in
 * one update of its lineage, then a validated update of each lineage holding a copy, marking it.
 * The report this returns is what an event of the revocation would carry.
 */
import type { Client } from '@temporalio/client';
import { checkName, InputError } from '../common/names.js';
import { checkReason, checkUser, type AncestorRevoked } from '../common/lineage.js';
import { SA } from '../common/search-attributes.js';
import { mapLimited } from '../lib/concurrency.js';
import type { PushResult } from '../workflows/push/messages.js';
import {
  ancestorRevokedUpdate,
  originsQuery,
  revocationPlanQuery,
  revokeUpdate,
  type ChannelRevocation,
  type OriginRecord,
  type RevocationPlan,
} from '../workflows/lineage/messages.js';
import { answered } from './answers.js';
import { describeLineage, lineageHandle, resolveVersion } from './lineage-client.js';

export interface RevokeRequest {
  by: string;
  version: string;
  reason: string;
  keepChannels?: boolean;
  dryRun?: boolean;
}

/** A copy of the revoked version in another image: a clone of it, or a clone of a clone. */
export interface CloneRevocation {
  image: string;
  version: string;
  /** The copies in between, nearest the revoked version first. */
  through: string[];
  /** `would-mark` on a dry run; `marked`, or `already-marked` when an earlier revocation marked it. */
  mark: 'would-mark' | 'marked' | 'already-marked';
  /** The revocation it was marked for, when marked already. */
  markedFor?: AncestorRevoked;
}

export interface RevocationReport {
  image: string;
  version: string;
  reason: string;
  by: string;
  dryRun: boolean;
  /** False on a dry run, and when the version was revoked already. */
  changed: boolean;
  /** The revocation as recorded (absent on a dry run of a version not yet revoked). */
  revoked?: { reason: string; by: string; at: string };
  /** The version was revoked before this request: its channels were left as they are. */
  alreadyRevoked: boolean;
  channels: ChannelRevocation[];
  tags: string[];
  packs: RevocationPlan['packs'];
  /** Running volumes cloned from the version (visibility), and any the lineage last heard of. */
  volumes: { volume: string; nas?: string; compute?: string }[];
  clones: CloneRevocation[];
  /** Lineages that could not be asked for copies (their orchestrator did not answer): not marked. */
  unchecked?: string[];
  /** Push workflows of the version that visibility still holds (closed ones for the namespace's retention period). */
  pushes: { workflowId: string; status: string; reference?: string; digest?: string }[];
}

const READS_AT_ONCE = 8;

/** Running workflows matching a visibility query, with their search attributes. */
async function listed(client: Client, query: string) {
  const found = [];
  for await (const wf of client.workflow.list({ query })) found.push(wf);
  return found;
}

async function volumesRunning(client: Client, image: string, version: string) {
  const query = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${image}' AND ${SA.version.name} = '${version}' AND ExecutionStatus = 'Running'`;
  return (await listed(client, query)).flatMap((wf) => {
    const volume = wf.typedSearchAttributes.get(SA.volume);
    const nas = wf.typedSearchAttributes.get(SA.nas);
    const compute = wf.typedSearchAttributes.get(SA.computeHost);
    return volume ? [{ volume, ...(nas ? { nas } : {}), ...(compute ? { compute } : {}) }] : [];
  });
}

/** Every copy of `image:version` in other lineages, however many clones deep, nearest first. */
async function copiesOf(client: Client, image: string, version: string) {
  const query = `${SA.kind.name} = 'lineage' AND ExecutionStatus = 'Running'`;
  const others = new Map<string, string>();
  for (const wf of await listed(client, query)) {
    const other = wf.typedSearchAttributes.get(SA.image);
    if (other && other !== image) others.set(other, wf.taskQueue);
  }
  // A revocation is not held up by a lineage that cannot answer (its orchestrator gone): that
  // lineage is named in the report as unchecked, never silently left out.
  const unchecked: string[] = [];
  const origins = await mapLimited([...others.keys()].sort(), READS_AT_ONCE, async (other) =>
    (
      await answered(client, `the lineage of ${other}`, () => lineageHandle(client, other).query(originsQuery), [
        others.get(other)!,
      ]).catch((err: unknown) => {
        // A lineage gone since it was listed holds no copies.
        if ((err as Error).name !== 'WorkflowNotFoundError') unchecked.push(other);
        return [] as OriginRecord[];
      })
    ).map((o) => ({ image: other, ...o })),
  );
  const byOrigin = new Map<string, (OriginRecord & { image: string })[]>();
  for (const o of origins.flat()) {
    const key = `${o.origin.image}:${o.origin.version}`;
    byOrigin.set(key, [...(byOrigin.get(key) ?? []), o]);
  }
  const copies: { image: string; version: string; through: string[]; marked?: AncestorRevoked }[] = [];
  const seen = new Set([`${image}:${version}`]);
  const walk = (key: string, through: string[]) => {
    for (const o of byOrigin.get(key) ?? []) {
      const copy = `${o.image}:${o.version}`;
      if (seen.has(copy)) continue;
      seen.add(copy);
      copies.push({
        image: o.image,
        version: o.version,
        through,
        ...(o.ancestorRevoked ? { marked: o.ancestorRevoked } : {}),
      });
    }
  };
  walk(`${image}:${version}`, []);
  for (let i = 0; i < copies.length; i++)
    walk(`${copies[i]!.image}:${copies[i]!.version}`, [
      ...copies[i]!.through,
      `${copies[i]!.image}:${copies[i]!.version}`,
    ]);
  return { copies, unchecked };
}

async function pushesOf(client: Client, image: string, version: string) {
  const query = `${SA.kind.name} = 'push' AND ${SA.image.name} = '${image}' AND ${SA.version.name} = '${version}'`;
  const runs = await listed(client, query);
  return mapLimited(runs, READS_AT_ONCE, async (wf) => {
    const status = wf.status.name;
    if (status !== 'COMPLETED') return { workflowId: wf.workflowId, status };
    const result = (await client.workflow.getHandle(wf.workflowId, wf.runId).result()) as PushResult;
    return { workflowId: wf.workflowId, status, reference: result.reference, digest: result.digest };
  });
}

/**
 * Plans the revocation of `image:version` and, unless it is a dry run, carries it out: the revoke
 * update (revocation and rollbacks, atomic in the lineage), then the marks on every copy. Again,
 * it changes nothing that is done already, and marks copies an interrupted revocation left unmarked.
 */
export async function revokeAcrossLineages(
  client: Client,
  image: string,
  request: RevokeRequest,
): Promise<RevocationReport> {
  checkName('image', image);
  checkUser('by', request.by);
  const version = checkName('--version', request.version);
  const reason = checkReason('--reason', request.reason);
  // A version id, not a tag: a tag resolves to a version of another name.
  const found = await resolveVersion(client, image, version).catch(() => undefined);
  if (found?.id !== version) {
    const { counts, latest } = await describeLineage(client, image);
    throw new InputError(
      '--version',
      `a version of ${image} (${counts.versions ? `${counts.versions} versions, the newest ${latest.at(-1)!.id}` : 'none yet'})`,
      version,
    );
  }
  const keepChannels = Boolean(request.keepChannels);
  const plan = await lineageHandle(client, image).query(revocationPlanQuery, { version, keepChannels });
  const [volumes, { copies, unchecked }, pushes] = [
    await volumesRunning(client, image, version),
    await copiesOf(client, image, version),
    await pushesOf(client, image, version),
  ];
  const report = (p: RevocationPlan, changed: boolean, revoked?: RevocationReport['revoked']): RevocationReport => {
    const live = new Set(volumes.map((v) => v.volume));
    return {
      image,
      version,
      reason,
      by: request.by,
      dryRun: Boolean(request.dryRun),
      changed,
      ...(revoked ? { revoked } : {}),
      alreadyRevoked: Boolean(plan.revoked),
      channels: p.channels,
      tags: p.tags,
      packs: p.packs,
      volumes: [...volumes, ...p.volumes.filter((v) => !live.has(v)).map((volume) => ({ volume }))].sort((a, b) =>
        a.volume.localeCompare(b.volume),
      ),
      clones: [],
      ...(unchecked.length ? { unchecked } : {}),
      pushes,
    };
  };
  if (request.dryRun) {
    return {
      ...report(plan, false, plan.revoked),
      clones: copies.map((c) => ({
        image: c.image,
        version: c.version,
        through: c.through,
        ...(c.marked ? { mark: 'already-marked' as const, markedFor: c.marked } : { mark: 'would-mark' as const }),
      })),
    };
  }
  const done = await lineageHandle(client, image).executeUpdate(revokeUpdate, {
    args: [{ by: request.by, version, reason, ...(keepChannels ? { keepChannels } : {}) }],
  });
  const ancestor: AncestorRevoked = { image, version, ...done.revoked };
  const clones: CloneRevocation[] = [];
  for (const c of copies) {
    const marked = await lineageHandle(client, c.image).executeUpdate(ancestorRevokedUpdate, {
      args: [
        {
          by: request.by,
          version: c.version,
          ancestor: { ...ancestor, ...(c.through.length ? { through: c.through } : {}) },
        },
      ],
    });
    clones.push({
      image: c.image,
      version: c.version,
      through: c.through,
      ...(marked.changed ? { mark: 'marked' } : { mark: 'already-marked', markedFor: marked.ancestorRevoked }),
    });
  }
  return { ...report(done, done.changed, done.revoked), clones };
}
