/**
 * The client side of volumes, shared by the CLI and the bridges: resolve the version a volume is
 * cloned from, check that the hosts' workers are there, start-and-map a volume, address a known
 * volume and list the storage map.
 */
import type { Client } from '@temporalio/client';
import { checkHost, checkName, InputError } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import {
  cleanUpdate,
  deleteUpdate,
  mapUpdate,
  setAttrsUpdate,
  syncNowUpdate,
  unmapUpdate,
  volumeQuery,
  volumeWorkflowId,
  type BaseVersion,
  type MapRequest,
  type MapResult,
  type VolumeAttrs,
  type VolumeView,
} from '../workflows/volume/messages.js';
import { volumeWorkflow } from '../workflows/volume/workflow.js';
import type { LineageSummary } from '../workflows/lineage/messages.js';
import { answered, sendUpdate, updated } from './answers.js';
import { sdk } from './sdk.js';
import { BASE_REF } from './image-refs.js';

export { BASE_REF };

/** The version a channel points at now. */
function onChannel(view: Pick<LineageSummary, 'channels'>, image: string, channel: string): string {
  const current = view.channels[checkName('channel', channel)]?.current;
  if (!current)
    throw new InputError(
      '--image',
      `a channel of ${image} (${Object.keys(view.channels).join(', ') || 'none'})`,
      channel,
    );
  return current.version;
}

/**
 * The version a VM pack publishes now, and its base's format. The volume is cloned from that
 * version's stored copy (the file the pack's base is a link to), so switching the pack later never
 * changes the backing of a volume already cloned.
 */
function fromPack(
  view: Pick<LineageSummary, 'packs'>,
  image: string,
  name: string,
  nas: string,
): { id: string; format?: string } {
  const pack = view.packs[checkName('pack', name)];
  const vmPacks = Object.entries(view.packs)
    .filter(([, p]) => p.kind === 'vm')
    .map(([n]) => n);
  if (!pack || pack.kind !== 'vm')
    throw new InputError(
      '--image',
      `a VM pack of ${image} (${vmPacks.join(', ') || 'none'}; see imgflow pack --kind vm)`,
      name,
    );
  if (pack.host !== nas) throw new InputError('--nas', `the NAS holding pack ${name} (${pack.host})`, nas);
  return { id: pack.version, ...(pack.format ? { format: pack.format } : {}) };
}

/** `image`, `image:version`, `image:tag`, `image@channel` or `image%pack`: the version record to clone, from the lineage. */
export async function baseVersion(client: Client, ref: string, nas: string): Promise<BaseVersion> {
  const m = /^([^:@%]+)(?:([:@%])([^:@%]+))?$/.exec(ref);
  if (!m) throw new InputError('--image', BASE_REF, ref);
  const [, name, how, which] = m;
  const image = checkName('image', name);
  // The lineage's client only here: the storage map and a volume's own updates need none of it.
  const { describeLineage, resolveVersion } = await import('./lineage-client.js');
  // A channel or a pack is looked up in the lineage's summary; the version it names, or a version or
  // tag, is resolved by the lineage itself.
  const named =
    how === '%' || how === '@'
      ? await describeLineage(client, image).then((view) =>
          how === '%' ? fromPack(view, image, which!, nas) : { id: onChannel(view, image, which!) },
        )
      : undefined;
  const format = named?.format;
  const record = await resolveVersion(client, image, named ? named.id : which);
  const id = record.id;
  // A stub is always of a removed version.
  if (record.removed || !('artifacts' in record))
    throw new InputError(
      '--image',
      `a version whose files are still stored (${image}:${id} was removed by ${record.removed?.by}: ${record.removed?.reason})`,
      ref,
    );
  if (record.revoked)
    throw new InputError(
      '--image',
      `a version that is not revoked (${image}:${id} was revoked by ${record.revoked.by}: ${record.revoked.reason})`,
      ref,
    );
  const artifact = (format ? [format] : ['qcow2', 'raw'])
    .map((f) => record.artifacts.find((a) => a.host === nas && a.format === f))
    .find(Boolean);
  if (!artifact)
    throw new InputError(
      '--nas',
      `a NAS storing ${image}:${id} (${[...new Set(record.artifacts.map((a) => a.host))].join(', ') || 'none'})`,
      nas,
    );
  const origin =
    how === '@' ? { channel: which! } : how === '%' ? { pack: which! } : which && which !== id ? { tag: which } : {};
  return {
    image,
    version: id,
    artifact: { format: artifact.format, host: artifact.host, path: artifact.path },
    ...origin,
  };
}

export function volumeHandle(client: Client, volume: string) {
  return client.workflow.getHandle<typeof volumeWorkflow>(volumeWorkflowId(volume));
}

/** An update to a known volume; a volume never mapped is bad input. */
export async function known<T>(volume: string, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (err) {
    if ((err as Error).name === 'WorkflowNotFoundError')
      throw new InputError('volume', 'a volume known to imgflow (see imgflow maps)', volume);
    throw err;
  }
}

/** Maps a volume, starting its entity workflow on first use (one workflow per name, however many ask). */
export async function mapVolume(client: Client, volume: string, request: MapRequest): Promise<MapResult> {
  const start = new sdk.WithStartWorkflowOperation(volumeWorkflow, {
    workflowId: volumeWorkflowId(volume),
    taskQueue: WORKFLOW_QUEUE,
    args: [{ volume }],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [
      { key: SA.kind, value: 'volume' },
      { key: SA.volume, value: volume },
      { key: SA.state, value: 'unmapped' },
    ],
    staticSummary: `Volume ${volume}: its clone, export, attachment and syncs`,
  });
  return updated(client, `volume ${volume}`, WORKFLOW_QUEUE, () =>
    client.workflow.startUpdateWithStart(mapUpdate, {
      args: [request],
      startWorkflowOperation: start,
      waitForStage: 'ACCEPTED',
    }),
  );
}

/** Detaches a known volume from its compute host and ends its export; the clone is kept. */
export function unmapVolume(client: Client, volume: string, request: { by: string; waitSeconds?: number }) {
  return known(volume, () =>
    sendUpdate(client, volumeHandle(client, volume), `volume ${volume}`, unmapUpdate, request),
  );
}

/** Destroys a known, unmapped volume and its snapshots. */
export function deleteVolume(client: Client, volume: string, request: { by: string }) {
  return known(volume, () =>
    sendUpdate(client, volumeHandle(client, volume), `volume ${volume}`, deleteUpdate, request),
  );
}

/** Pulls a sync-mode volume's writes back to its NAS now. */
export function syncVolumeNow(client: Client, volume: string, request: { by: string }) {
  return known(volume, () =>
    sendUpdate(client, volumeHandle(client, volume), `volume ${volume}`, syncNowUpdate, request),
  );
}

/** The operator's repair of a volume whose compute host is gone (recorded in its history). */
export function cleanVolume(client: Client, volume: string, request: { by: string; force: boolean; reason: string }) {
  return known(volume, () =>
    sendUpdate(client, volumeHandle(client, volume), `volume ${volume}`, cleanUpdate, request),
  );
}

/** A known volume's attributes: read (an orchestrator must answer), or changed when `attrs` sets any beyond `by`. */
export function volumeAttrs(client: Client, volume: string, attrs: VolumeAttrs): Promise<VolumeView> {
  const handle = volumeHandle(client, volume);
  const changes = Object.keys(attrs).length > 1;
  return known(volume, () =>
    changes
      ? sendUpdate(client, handle, `volume ${volume}`, setAttrsUpdate, attrs)
      : handle
          .describe()
          .then((d) => answered(client, `volume ${volume}`, () => handle.query(volumeQuery), [d.taskQueue])),
  );
}

/** Volumes read by query at once: enough to list a large map within the answer bound, few enough not to swamp the orchestrators. */
const READS_AT_ONCE = 16;

/**
 * The storage map from visibility (eventually consistent), each volume read by query; sorted by
 * name. The whole listing is one read with one bound (see answers.ts): a volume whose workflow
 * does not answer makes the map unavailable, never silently shorter.
 */
export async function listVolumes(
  client: Client,
  filter: { nas?: string; compute?: string } = {},
): Promise<VolumeView[]> {
  const filters = [
    `${SA.kind.name} = 'volume'`,
    `ExecutionStatus = 'Running'`,
    ...(filter.nas ? [`${SA.nas.name} = '${checkHost('--nas', filter.nas)}'`] : []),
    ...(filter.compute ? [`${SA.computeHost.name} = '${checkHost('--compute', filter.compute)}'`] : []),
  ];
  const runs: { workflowId: string; runId: string; taskQueue: string }[] = [];
  for await (const wf of client.workflow.list({ query: filters.join(' AND ') }))
    runs.push({ workflowId: wf.workflowId, runId: wf.runId, taskQueue: wf.taskQueue });
  return answered(
    client,
    'the storage map',
    async () => {
      const views: VolumeView[] = [];
      for (let i = 0; i < runs.length; i += READS_AT_ONCE) {
        const batch = await Promise.all(
          runs.slice(i, i + READS_AT_ONCE).map((wf) =>
            client.workflow
              .getHandle(wf.workflowId, wf.runId)
              .query(volumeQuery)
              // Listed as running but gone since (deleted meanwhile): not part of the map.
              .catch((err: unknown) => {
                if ((err as Error).name === 'WorkflowNotFoundError') return undefined;
                throw err;
              }),
          ),
        );
        views.push(...batch.filter((v): v is VolumeView => v !== undefined));
      }
      return views.sort((a, b) => a.volume.localeCompare(b.volume));
    },
    runs.map((r) => r.taskQueue),
  );
}
