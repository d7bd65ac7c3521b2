/**
 * The demo across the hosts of a site (`imgflow cluster up --compute N`): the build runs on
 * builder-0 and is stored on nas-0, a volume of the prod version is mapped to one compute host
 * and read there (and refused on another), and cloud-0 syncs the demo's list, served on the hosts'
 * gateway. The hosts' own workers do the work; this process only asks and looks.
 */
import type { Client } from '@temporalio/client';
import { cloudRegistry } from '../activities/cloud/registry/configured.js';
import type { Run } from '../activities/runner.js';
import { DEFAULT_IQN_PREFIX } from '../activities/drivers/naming.js';
import { InputError } from '../common/names.js';
import { paths, type Config } from '../lib/config.js';
import { deleteUpdate, unmapUpdate } from '../workflows/volume/messages.js';
import { hostHome, readHostsState, runOn, type HostsState } from './cluster/hosts.js';
import { frontendAddress, uiUrl } from './cluster/cluster.js';
import { checkClusterName, readState } from './cluster/state.js';
import { currentUser } from './context.js';
import type { CloudPlace } from './demo-subscription.js';
import { formatPairs } from './output.js';
import { baseVersion, mapVolume, volumeHandle } from './volume-client.js';

const NAS = 'nas-0';
const CLOUD = 'cloud-0';

export interface DemoSite {
  hosts: HostsState;
  nas: string;
  /** The compute host the volume is mapped to, and one that must not read it (when there are two). */
  compute: string;
  other?: string;
  cloud: CloudPlace;
  webUi?: string;
}

/** The site of cluster `name`, as `cluster up --compute N` left it; bad input when there is none. */
export function demoSite(config: Pick<Config, 'home' | 'address'>, name: string): DemoSite {
  const dir = paths(config).cluster(checkClusterName(name));
  const hosts = readHostsState(dir);
  if (!hosts?.workers.length)
    throw new InputError(
      '--cluster',
      `a cluster brought up with its hosts (imgflow cluster --name ${name} up --compute N)`,
      name,
    );
  const cluster = readState(dir);
  // Anywhere else (the dev server, say) nothing polls the hosts' queues: the demo would wait forever.
  if (config.address !== frontendAddress(cluster))
    throw new InputError(
      '--address',
      `the frontend of cluster ${name}, ${frontendAddress(cluster)} (eval "$(imgflow cluster --name ${name} env)" first)`,
      config.address,
    );
  const computes = hosts.hosts.map((h) => h.name).filter((h) => h.startsWith('compute-'));
  const compute = computes[1] ?? computes[0]!;
  const other = computes.find((h) => h !== compute);
  return {
    hosts,
    nas: NAS,
    compute,
    ...(other ? { other } : {}),
    cloud: { site: CLOUD, registry: cloudRegistry({ home: hostHome(hosts, CLOUD) }, {}), listen: hosts.gateway },
    ...(cluster.ui ? { webUi: uiUrl(cluster) } : {}),
  };
}

/** Whether `host` can open the volume's iSCSI export as its own initiator (the name its worker attaches with). */
async function reads(run: Run, site: DemoSite, host: string, url: string): Promise<boolean> {
  const argv = ['iscsi-readcapacity16', '-s', `--initiator-name=${DEFAULT_IQN_PREFIX}:${host}`, url];
  return (
    (
      await runOn(site.hosts, host, argv, {
        okExitCodes: Array.from({ length: 255 }, (_, i) => i + 1),
        timeoutMs: 30_000,
      })
    ).exitCode === 0
  );
}

/** Maps a volume of `ref` from the NAS to the site's compute host, reads it there and from another, then removes it. */
export async function mapAcrossHosts(client: Client, run: Run, site: DemoSite, ref: string, volume: string) {
  const by = currentUser();
  const base = await baseVersion(client, ref, site.nas);
  const mapped = await mapVolume(client, volume, {
    by,
    base,
    nas: site.nas,
    computeHost: site.compute,
    waitSeconds: 60,
  });
  let readable: boolean;
  let refused: boolean | undefined;
  try {
    readable = await reads(run, site, site.compute, mapped.target);
    refused = site.other === undefined ? undefined : !(await reads(run, site, site.other, mapped.target));
  } finally {
    const handle = volumeHandle(client, volume);
    await handle.executeUpdate(unmapUpdate, { args: [{ by, waitSeconds: 60 }] });
    await handle.executeUpdate(deleteUpdate, { args: [{ by }] });
  }
  if (!readable) throw new Error(`${site.compute} could not read ${mapped.target}`);
  if (refused === false)
    throw new Error(`${site.other} could read ${mapped.target}, which is exported to ${site.compute} only`);
  const text = formatPairs([
    ['volume', `${volume} from ${base.image}:${base.version} on ${site.nas}, exported as ${mapped.target}`],
    [site.compute, 'reads it'],
    ...(site.other ? [[site.other, 'refused by the target'] as [string, string]] : []),
    ['then', 'unmapped and deleted'],
  ]);
  return {
    summary: {
      volume,
      target: mapped.target,
      compute: site.compute,
      readable,
      ...(site.other ? { refusedTo: site.other } : {}),
    },
    text,
  };
}
