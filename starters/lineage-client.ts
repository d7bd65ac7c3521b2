/**
 * The CLI's way to a lineage: start it on first use, send it validated updates, read it by query,
 * and say who is asking.
 */
import { ScheduleAlreadyRunning, WithStartWorkflowOperation, type Client, type WorkflowHandle } from '@temporalio/client';
import { checkName, InputError } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import { describeQuery, lineageGcWorkflow, lineageWorkflow, lineageWorkflowId, type LineageView } from '../workflows/lineage.js';
import type { UpdateDefinition } from '@temporalio/common';


/** `image`, `image:version` or `image:tag`. */
export function parseImageRef(ref: string): { image: string; ref?: string } {
  const [image, rest, extra] = ref.split(':');
  if (extra !== undefined || rest === '') throw new InputError('image', '<image>[:<version or tag>]', ref);
  return { image: checkName('image', image), ...(rest ? { ref: rest } : {}) };
}

export function lineageHandle(client: Client, image: string): WorkflowHandle<typeof lineageWorkflow> {
  return client.workflow.getHandle(lineageWorkflowId(image));
}

/** Sends an update to the image's lineage, starting the lineage if this is its first request. */
export async function updateLineage<Ret, Args extends unknown[]>(client: Client, image: string, update: UpdateDefinition<Ret, Args>, ...args: Args): Promise<Ret> {
  const start = new WithStartWorkflowOperation(lineageWorkflow, {
    workflowId: lineageWorkflowId(image),
    taskQueue: WORKFLOW_QUEUE,
    args: [{ image }],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [
      { key: SA.kind, value: 'lineage' },
      { key: SA.image, value: image },
    ],
    staticSummary: `Lineage of image ${image}: versions, tags, channels and their history`,
  });
  const result = await client.workflow.executeUpdateWithStart(update, { args, startWorkflowOperation: start });
  await ensureGcSchedule(client, image);
  return result;
}

export const gcScheduleId = (image: string) => `lineage-gc-${checkName('image', image)}`;

/** The image's daily retention run; one per image, so an existing schedule is left as it is. */
export async function ensureGcSchedule(client: Client, image: string): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: gcScheduleId(image),
      spec: { intervals: [{ every: '1d' }] },
      action: { type: 'startWorkflow', workflowType: lineageGcWorkflow, workflowId: gcScheduleId(image), taskQueue: WORKFLOW_QUEUE, args: [{ image }] },
      policies: { overlap: 'SKIP' },
      memo: { purpose: `daily retention of image ${image}` },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
}

/** The volumes cloned from the image's versions, as visibility lists the running volume workflows. */
export async function volumesOf(client: Client, image: string): Promise<{ volume: string; version: string }[]> {
  const found: { volume: string; version: string }[] = [];
  const query = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${checkName('image', image)}' AND ExecutionStatus = 'Running'`;
  for await (const wf of client.workflow.list({ query })) {
    const volume = wf.typedSearchAttributes.get(SA.volume);
    const version = wf.typedSearchAttributes.get(SA.version);
    if (volume && version) found.push({ volume, version });
  }
  return found;
}

/** The lineage's state, or a one-line error when the image has none yet. */
export async function describeLineage(client: Client, image: string): Promise<LineageView> {
  try {
    return await lineageHandle(client, image).query(describeQuery);
  } catch (err) {
    if ((err as Error).name === 'WorkflowNotFoundError') throw new InputError('image', 'an image with at least one build (see imgflow build)', image);
    throw err;
  }
}

/** The version a ref names: a version id, a tag, or (no ref) the newest version. */
export function resolveVersion(view: LineageView, image: string, ref?: string): string {
  if (!ref) {
    const newest = view.versions.at(-1);
    if (!newest) throw new InputError('image', 'an image with at least one version', image);
    return newest.id;
  }
  if (view.versions.some((v) => v.id === ref)) return ref;
  const tag = view.tags[ref];
  if (tag) return tag.version;
  throw new InputError('version', `a version or tag of ${image} (versions ${view.versions.map((v) => v.id).join(', ') || 'none'})`, ref);
}
