/**
 * A volume's map, unmap and delete as a script would run them: the volume workflow's steps, in
 * its order, called straight on the NAS and compute activities without Temporal. The anchor the
 * map benches set imgflow against.
 */
import type { ComputeActivities } from '../activities/compute/index.js';
import type { NasVolumeActivities } from '../activities/nas/volumes.js';
import type { MapRequest } from '../workflows/volume/messages.js';

export interface DirectHosts {
  nas: NasVolumeActivities;
  compute: ComputeActivities;
}

/** Clone, export to the compute host's initiator, attach; returns the URL the volume is attached from. */
export async function directMap({ nas, compute }: DirectHosts, volume: string, base: MapRequest['base']) {
  const { initiator } = await compute.computeInitiator();
  const { exported } = await nas.volumeCloneExport({
    volume,
    image: base.image,
    version: base.version,
    source: base.artifact.path,
    initiator,
  });
  await compute.computeAttach({ volume, url: exported.url });
  return exported.url;
}

export async function directUnmap({ nas, compute }: DirectHosts, volume: string, url: string): Promise<void> {
  await compute.computeDetach({ volume, url, waitSeconds: 30 });
  await nas.volumeUnexport({ volume });
}

export async function directDelete({ nas }: DirectHosts, volume: string): Promise<void> {
  await nas.volumeDestroy({ volume });
}
