/**
 * The demo's last step: the prod version mapped to a volume on this host, then revoked as if a
 * flaw were found after its release. The revocation rolls prod back where an earlier usable
 * version exists, and `imgflow fleet` shows the volume as running a revoked version; the volume is
 * then unmapped and deleted, so a later demo starts from the same place.
 */
import type { Client } from '@temporalio/client';
import type { VersionRecord } from '../common/lineage.js';
import type { Config } from '../lib/config.js';
import { currentUser } from './context.js';
import { DEMO_IMAGE } from './demo-recipe.js';
import { fleet, formatFleet } from './fleet-client.js';
import { formatPairs } from './output.js';
import { revokeAcrossLineages } from './revocation-client.js';
import { baseVersion, deleteVolume, mapVolume, unmapVolume } from './volume-client.js';

export async function demoRevocation(client: Client, config: Config, version: VersionRecord, stamp: string) {
  const by = currentUser();
  const volume = `demo-fleet-${stamp}`;
  const base = await baseVersion(client, `${DEMO_IMAGE}@prod`, config.host);
  await mapVolume(client, volume, { by, base, nas: config.host, computeHost: config.host });
  try {
    const report = await revokeAcrossLineages(client, DEMO_IMAGE, {
      by,
      version: version.id,
      reason: 'demo: a flaw found after release',
    });
    const rows = (await fleet(client, { image: DEMO_IMAGE })).filter((r) => r.kind === 'pack' || r.name === volume);
    const channels = report.channels.map((c) =>
      c.action === 'rollback' ? `${c.channel} back to ${c.to!.tag} (${c.to!.version})` : `${c.channel}: ${c.action}`,
    );
    const text = [
      formatPairs([
        ['revoked', `${DEMO_IMAGE}:${version.id} (${report.reason})`],
        ['channels', channels.join(', ') || 'none pointed at it'],
        [
          'touched',
          `${report.volumes.length} volume(s), ${report.tags.length} tag(s), ${report.clones.length} copy(ies)`,
        ],
      ]),
      formatFleet(rows),
    ].join('\n');
    return { summary: { report, fleet: rows }, text };
  } finally {
    await unmapVolume(client, volume, { by });
    await deleteVolume(client, volume, { by });
  }
}
