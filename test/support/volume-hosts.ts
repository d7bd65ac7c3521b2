/** A NAS and a compute host on the default drivers (qcow2 store, no export, local attach), sharing one state directory. */
import { createComputeActivities } from '../../activities/compute/index.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasPackActivities } from '../../activities/nas/pack.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import type { Run } from '../../activities/runner.js';
import { queues } from '../../common/queues.js';
import { loadConfig } from '../../lib/config.js';

/** The activities of `nas.<nasHost>` (volumes, and packs when asked) and `compute.<nodeHost>`, for `withWorkers`. */
export function localVolumeHosts(o: { home: string; nasHost: string; nodeHost: string; run: Run; packs?: boolean }) {
  const { home, nasHost, nodeHost, run } = o;
  const nasConfig = loadConfig({ home, host: nasHost }, {});
  const nodeConfig = loadConfig({ home, host: nodeHost }, {});
  return {
    [queues.nas(nasHost)]: {
      ...createHostActivities({ role: 'nas', config: nasConfig, arch: 'x86_64', run }),
      ...createNasVolumeActivities({ run, config: nasConfig }),
      ...(o.packs ? createNasPackActivities({ run, config: nasConfig }) : {}),
    },
    [queues.compute(nodeHost)]: {
      ...createHostActivities({ role: 'compute', config: nodeConfig, arch: 'x86_64', run }),
      ...createComputeActivities({ run, config: nodeConfig }),
    },
  };
}
