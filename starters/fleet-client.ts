/**
 * The fleet: every volume and pack with the version it runs, how that version was chosen, and
 * where it stands now on its lineage's channels. Volumes are read as the storage map reads them;
 * each lineage answers one `standing` query for the versions its volumes and packs run.
 */
import type { Client } from '@temporalio/client';
import { SA } from '../common/search-attributes.js';
import { checkName, InputError } from '../common/names.js';
import type { VersionStanding } from '../workflows/lineage/standing.js';
import type { VolumeView } from '../workflows/volume/messages.js';
import { lineageStanding } from './lineage-client.js';
import { formatTable } from './output.js';
import { listVolumes } from './volume-client.js';

/**
 * - `current`: the channel it came from still carries it (or, chosen by id or tag, some channel does);
 * - `superseded`: that channel (or every channel that carried it) carries another version now;
 * - `revoked`, `removed`: as the lineage records;
 * - `off-channel`: chosen by id or tag, and no channel ever carried it.
 */
export type FleetStatus = 'current' | 'superseded' | 'revoked' | 'removed' | 'off-channel';

export interface FleetRow {
  kind: 'volume' | 'pack';
  name: string;
  /** The compute host a volume is mapped to, or the NAS a pack is published on. */
  host: string;
  nas: string;
  image: string;
  version: string;
  /** How the version was chosen: `@channel`, `:tag`, `%pack`, or empty for a version id. */
  from: string;
  status: FleetStatus;
  detail: string;
}

/** Running lineages, from visibility: the images that may have packs. */
async function images(client: Client): Promise<string[]> {
  const found: string[] = [];
  const query = `${SA.kind.name} = 'lineage' AND ExecutionStatus = 'Running'`;
  for await (const wf of client.workflow.list({ query })) {
    const image = wf.typedSearchAttributes?.get(SA.image);
    if (image) found.push(image);
  }
  return found;
}

/** Where a version stands, and (in its detail) the revoked version it is a copy of, if any. */
export function statusOf(v: VersionStanding | undefined, channel?: string): { status: FleetStatus; detail: string } {
  const found = standingOf(v, channel);
  const a = v?.ancestorRevoked;
  return a
    ? { ...found, detail: `${found.detail}; copy of ${a.image}:${a.version}, revoked by ${a.by}: ${a.reason}` }
    : found;
}

/** Where a version stands, seen from the channel it was chosen by (if any). */
function standingOf(v: VersionStanding | undefined, channel?: string): { status: FleetStatus; detail: string } {
  if (!v?.known) return { status: 'removed', detail: 'not in the lineage' };
  if (v.revoked) return { status: 'revoked', detail: `by ${v.revoked.by}: ${v.revoked.reason}` };
  if (v.removed) return { status: 'removed', detail: `by ${v.removed.by}: ${v.removed.reason}` };
  const moved = (s: { channel: string; now: string }) => `${s.channel} now at ${s.now}`;
  if (channel !== undefined) {
    if (v.currentOn.includes(channel)) return { status: 'current', detail: `on ${channel}` };
    const on = v.supersededOn.find((s) => s.channel === channel);
    return { status: 'superseded', detail: on ? moved(on) : `${channel} no longer carries it` };
  }
  if (v.currentOn.length) return { status: 'current', detail: `on ${v.currentOn.join(', ')}` };
  if (v.supersededOn.length) return { status: 'superseded', detail: v.supersededOn.map(moved).join(', ') };
  return { status: 'off-channel', detail: v.tags.length ? `tagged ${v.tags.join(', ')}` : 'no channel carried it' };
}

const fromOf = (origin: VolumeView['origin']) =>
  origin?.channel !== undefined
    ? `@${origin.channel}`
    : origin?.tag !== undefined
      ? `:${origin.tag}`
      : origin?.pack !== undefined
        ? `%${origin.pack}`
        : '';

/** Every volume and pack (of one image, when given), sorted by host, then kind, then name. */
export async function fleet(client: Client, filter: { image?: string } = {}): Promise<FleetRow[]> {
  const image = filter.image === undefined ? undefined : checkName('--image', filter.image);
  const volumes = (await listVolumes(client)).filter((v) => v.base && (!image || v.base.image === image));
  const lineages = new Set(image ? [image] : [...(await images(client)), ...volumes.map((v) => v.base!.image)]);
  const rows: FleetRow[] = [];
  for (const name of [...lineages].sort()) {
    const mine = volumes.filter((v) => v.base!.image === name);
    // Volumes of an image whose lineage is gone still show, their versions as not in the lineage.
    const standing = await lineageStanding(
      client,
      name,
      mine.map((v) => v.base!.version),
    ).catch((err: unknown) => {
      if (err instanceof InputError && !image) return { packs: {}, versions: [] };
      throw err;
    });
    const byVersion = new Map(standing.versions.map((v) => [v.version, v]));
    for (const v of mine) {
      const base = v.base!;
      rows.push({
        kind: 'volume',
        name: v.volume,
        host: v.computeHost ?? '',
        nas: v.nas ?? '',
        image: name,
        version: base.version,
        from: fromOf(v.origin),
        ...statusOf(byVersion.get(base.version), v.origin?.channel),
      });
    }
    for (const [pack, p] of Object.entries(standing.packs))
      rows.push({
        kind: 'pack',
        name: pack,
        host: p.host,
        nas: p.host,
        image: name,
        version: p.version,
        from: `:${p.tag}`,
        ...statusOf(byVersion.get(p.version)),
      });
  }
  return rows.sort(
    (a, b) => a.host.localeCompare(b.host) || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name),
  );
}

/** The fleet as a table for people, and a line that counts it by host and status. */
export function formatFleet(rows: FleetRow[]): string {
  const table = formatTable(
    rows.map((r) => ({ ...r, version: `${r.image}:${r.version}${r.from ? ` (${r.from})` : ''}` })),
    ['host', 'kind', 'name', 'nas', 'version', 'status', 'detail'],
    ['HOST', 'KIND', 'NAME', 'NAS', 'VERSION (FROM)', 'STATUS', 'DETAIL'],
  );
  const count = (s: FleetStatus) => rows.filter((r) => r.status === s).length;
  const hosts = new Set(rows.map((r) => r.host)).size;
  const statuses: FleetStatus[] = ['current', 'superseded', 'revoked', 'removed', 'off-channel'];
  return `${table}\n${rows.length} on ${hosts} host${hosts === 1 ? '' : 's'}: ${statuses.map((s) => `${count(s)} ${s}`).join(', ')}`;
}
