/**
 * What a cluster's hosts hold, counted to compare before and after a test: their namespaces and
 * links, nas-0's iSCSI targets, the volumes cloned in the NAS's store, and the mounts of those
 * clones and of the namespaces.
 */
import fs from 'node:fs';
import type { Run } from '../../activities/runner.js';
import { runOn, type HostsState } from '../../starters/cluster/hosts.js';

export interface HostsCensus {
  namespaces: number;
  links: number;
  targets: number;
  clones: number;
  mounts: number;
}

/** `store` is nas-0's dataset (its IMGFLOW_NAS_POOL); volumes are cloned below `<store>/volumes`. */
export async function hostsCensus(
  run: Run,
  state: HostsState,
  store: { dataset: string; mountpoint: string },
): Promise<HostsCensus> {
  const tgt = (
    await runOn(state, 'nas-0', [
      'tgtadm',
      '-C',
      String(state.tgt.controlPort),
      '--lld',
      'iscsi',
      '--op',
      'show',
      '--mode',
      'target',
    ])
  ).stdout;
  const volumes = `${store.dataset}/volumes`;
  const clones = (
    await run(['zfs', 'list', '-H', '-r', '-t', 'filesystem', '-o', 'name', volumes], { okExitCodes: [1] })
  ).stdout
    .split('\n')
    .filter((name) => name.startsWith(`${volumes}/`));
  return {
    namespaces: (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`${state.prefix}-`))
      .length,
    links: fs.readdirSync('/sys/class/net').filter((l) => l.startsWith(state.prefix)).length,
    targets: (tgt.match(/^Target \d+:/gm) ?? []).length,
    clones: clones.length,
    // The clones' mounts and the namespaces' (bases and the volumes' parent stay once made).
    mounts: fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(`${store.mountpoint}/volumes/`) || l.includes(`/run/netns/${state.prefix}-`)).length,
  };
}
