/**
 * A cluster's hosts on their own addresses: one network namespace per host on a private bridge,
 * each host's `imgflow worker` inside its namespace, the NAS's tgtd inside `nas-0`, and a Temporal
 * dev server of this file's own, reached on the bridge's gateway (through a relay: see relay.ts). Across that network:
 * - a map from the NAS in `nas-0` to `compute-1`: the disk is read across the bridge from inside
 *   compute-1 and refused from inside compute-2;
 * - a sync-mode map: the node's first copy streamed by nas-0 to compute-1 and its writes streamed
 *   back, each side's zfs command run by its own host's worker, over the bridge;
 * - compute-1 cut off (its link down) while it attaches: the map fails, and the NAS keeps no
 *   clone and no target;
 * - down leaves no process, namespace, veth, bridge, mount, claim or tgtd socket behind.
 * Each counts namespaces, links, targets, clones and mounts before and after.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client, type Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { sha256File } from '../../lib/files.js';
import { findOnPath } from '../../lib/which.js';
import {
  downHosts,
  hostHome,
  hostOf,
  readHostsState,
  runOn,
  setLink,
  upHosts,
  type HostsState,
} from '../../starters/cluster/hosts.js';
import { updateLineage } from '../../starters/lineage-client.js';
import {
  connectWithin,
  ensureSearchAttributes,
  ensureTemporalCli,
  spawnDevServer,
  waitForNamespace,
} from '../../starters/temporal-server.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';
import { syncNowUpdate, volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { hostsCensus } from '../support/census.js';
import { imgflowAsync } from '../support/cli.js';
import { throwawayPool, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { freePort } from '../support/ports.js';
import { relayTcp } from '../support/relay.js';
import { alive, killGroup } from '../support/processes.js';
import { testDataConverter } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { newVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

const MiB = 1024 * 1024;
const NAMESPACE = 'imgflow';
const IQN = 'iqn.2026-01.org.imgflow';
const REFUSED = Array.from({ length: 255 }, (_, i) => i + 1);

describe('hosts on their own addresses', () => {
  requireTools('ip', 'nsenter', 'tgtd', 'tgtadm', 'iscsi-readcapacity16', 'qemu-io', 'qemu-img', 'zfs');
  const dir = tempDir('imgflow-hosts-');
  useZfsFuse();
  const pool = throwawayPool(dir);
  const nodePool = throwawayPool(dir);
  const clusterDir = path.join(dir, 'cluster');
  const { logger } = memoryLogger();
  const run = createRunner(logger);
  const image = 'hostsimg';
  // compute-1's attach of volume `vm-cut` waits for `release` (after writing `attaching`), so the
  // test can cut compute-1 off at that moment; every other call runs the real tool at once.
  const shims = path.join(dir, 'shims');
  const attaching = path.join(dir, 'attaching');
  const release = path.join(dir, 'release');
  let state: HostsState;
  let server: { pid: number; address: string } | undefined;
  let connection: Connection | undefined;
  let closeRelay: (() => Promise<void>) | undefined;
  let client: Client;

  const cli = (...args: string[]) =>
    imgflowAsync(['--address', state.frontend, '--namespace', NAMESPACE, '--home', path.join(dir, 'cli'), ...args], {
      IMGFLOW_USER: 'alice',
    });
  const nasAddress = () => hostOf(state, 'nas-0').address;
  const volumeUrl = (volume: string) => `iscsi://${nasAddress()}:3260/${IQN}:nas-0.${volume}/1`;

  /** What the hosts hold, to compare before and after. */
  const census = () =>
    hostsCensus(run, state, { dataset: `${pool.name}/imgflow`, mountpoint: `${pool.mountpoint}/imgflow` });

  /** Reads the volume's first MiB through libiscsi from inside `host`, as that host's initiator. */
  const readFrom = (host: string, volume: string) =>
    runOn(state, host, ['iscsi-readcapacity16', '-s', `--initiator-name=${IQN}:${host}`, volumeUrl(volume)], {
      okExitCodes: REFUSED,
      timeoutMs: 30_000,
    });

  const pattern = async (file: string, byte: string, offset: string) => {
    const r = await run(['qemu-io', '-f', 'raw', '-r', '-U', '-c', `read -P ${byte} ${offset} 1M`, file], {
      okExitCodes: [1],
    });
    return r.exitCode === 0 && !/Pattern verification failed/.test(r.stdout + r.stderr);
  };

  /**
   * Reads the NAS's newest imgflow snapshot of a volume through a throwaway clone: zfs-fuse can
   * keep a rolled-back file's old pages cached for the dataset's own mount.
   */
  async function onNas(volume: string, byte: string, offset: string): Promise<boolean> {
    const dataset = `${pool.name}/imgflow/volumes/${volume}`;
    const snaps = (await run(['zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name', '-d', '1', dataset])).stdout
      .split('\n')
      .filter((n) => n.includes('@imgflow-'))
      .sort();
    const check = `${pool.name}/check-${volume}`;
    await run(['zfs', 'clone', snaps.at(-1)!, check]);
    try {
      return await pattern(path.join(pool.mountpoint, `check-${volume}`, 'disk.raw'), byte, offset);
    } finally {
      await until(
        'the check clone to go',
        async () => (await run(['zfs', 'destroy', check], { okExitCodes: [1] })).exitCode === 0,
        30_000,
      );
    }
  }

  beforeAll(async () => {
    fs.mkdirSync(shims);
    const real = findOnPath('iscsi-readcapacity16')!;
    fs.writeFileSync(
      path.join(shims, 'iscsi-readcapacity16'),
      `#!/bin/sh\ncase "$*" in *.vm-cut/*) if [ ! -e ${attaching} ]; then echo $$ > ${attaching}; while [ ! -e ${release} ]; do sleep 0.2; done; fi;; esac\nexec ${real} "$@"\n`,
      { mode: 0o755 },
    );
    const frontendPort = await freePort();
    const spec = {
      dir: clusterDir,
      compute: 3,
      frontendPort,
      workers: ['nas-0', 'compute-1', 'compute-2', 'control-0'],
      env: {
        'nas-0': { IMGFLOW_NAS_POOL: `${pool.name}/imgflow` },
        'compute-1': { PATH: `${shims}:${process.env.PATH ?? ''}`, IMGFLOW_COMPUTE_POOL: `${nodePool.name}/imgflow` },
      },
    };
    // The network first: the frontend listens on its gateway, and only then do the workers start.
    state = await upHosts({ ...spec, workers: [] });
    server = spawnDevServer({
      cli: ensureTemporalCli(),
      port: await freePort(),
      dbFile: path.join(dir, 'temporal.sqlite'),
      logFile: path.join(dir, 'temporal.log'),
      namespace: NAMESPACE,
    });
    closeRelay = await relayTcp(
      { host: state.gateway, port: frontendPort },
      { host: '127.0.0.1', port: Number(server.address.split(':')[1]) },
    );
    connection = await connectWithin(server.address, 60_000);
    if (!connection) throw new Error(`the dev server on ${server.address} did not start; see ${dir}/temporal.log`);
    await waitForNamespace(connection, NAMESPACE, 30_000);
    await ensureSearchAttributes(connection, NAMESPACE);
    client = new Client({ connection, namespace: NAMESPACE, dataConverter: testDataConverter() });
    state = await upHosts(spec);

    // A stored version on the NAS, as a build leaves it.
    const file = path.join(hostHome(state, 'nas-0'), 'nas', 'nas-0', 'store', image, 'v1', `${image}-v1.raw`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await run(['qemu-img', 'create', '-q', '-f', 'raw', file, `${32 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', file]);
    await updateLineage(client, image, registerVersionUpdate, {
      ...newVersion(1),
      artifacts: [{ format: 'raw', host: 'nas-0', path: file, sha256: await sha256File(file), bytes: 32 * MiB }],
    });
  }, 400_000);

  afterAll(async () => {
    fs.writeFileSync(release, '');
    await connection?.close();
    killGroup(server?.pid);
    await closeRelay?.();
    const left = readHostsState(clusterDir);
    if (left) await downHosts(left);
  }, 120_000);

  it('maps from nas-0 to compute-1 across the bridge: readable from compute-1, refused from compute-2', async () => {
    const before = await census();
    const mapped = await cli(
      'map',
      'vm-1',
      '--image',
      `${image}:v1`,
      '--nas',
      'nas-0',
      '--compute',
      'compute-1',
      '--size',
      '1',
    );
    expect(mapped.stderr).toBe('');
    expect(mapped.status).toBe(0);
    expect(mapped.stdout).toBe(`${volumeUrl('vm-1')}\n`);
    expect(await census()).toEqual({
      ...before,
      targets: before.targets + 1,
      clones: before.clones + 1,
      mounts: before.mounts + 1,
    });

    const fromCompute1 = await readFrom('compute-1', 'vm-1');
    expect(fromCompute1.exitCode).toBe(0);
    expect(Number(fromCompute1.stdout.trim())).toBe(1024 * MiB);
    // The clone's bytes, read through the target from inside compute-1.
    const opts = `driver=iscsi,transport=tcp,portal=${nasAddress()}:3260,target=${IQN}:nas-0.vm-1,lun=1,initiator-name=${IQN}:compute-1`;
    const read = await runOn(state, 'compute-1', ['qemu-io', '-r', '--image-opts', opts, '-c', 'read -P 0x5a 0 1M'], {
      okExitCodes: [1],
    });
    expect(read.exitCode).toBe(0);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);
    const fromCompute2 = await readFrom('compute-2', 'vm-1');
    expect(fromCompute2.exitCode).not.toBe(0);

    expect((await cli('unmap', 'vm-1')).status).toBe(0);
    expect((await cli('delete-volume', 'vm-1')).status).toBe(0);
    expect(await census()).toEqual(before);
  });

  it("sync mode across the bridge: nas-0 streams the node's copy to compute-1, compute-1 streams its writes back", async () => {
    const before = await census();
    const mapped = await cli(
      'map',
      'vm-s',
      '--image',
      `${image}:v1`,
      '--nas',
      'nas-0',
      '--compute',
      'compute-1',
      '--sync',
      '--frequency',
      '3600',
    );
    expect(mapped.stderr).toBe('');
    expect(mapped.status).toBe(0);
    const nodeCopy = path.join(nodePool.mountpoint, 'imgflow', 'volumes', 'vm-s', 'disk.raw');
    expect(mapped.stdout).toBe(`${nodeCopy}\n`);
    expect(await pattern(nodeCopy, '0x5a', '0')).toBe(true);

    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0xa5 2M 1M', nodeCopy]);
    const handle = client.workflow.getHandle(volumeWorkflowId('vm-s'));
    const pulled = await handle.executeUpdate(syncNowUpdate, { args: [{ by: 'alice' }] });
    expect(pulled.sent).toBe(true);
    expect(pulled.from).toMatch(/^imgflow-/);
    expect(await onNas('vm-s', '0xa5', '2M')).toBe(true);

    // Each side ran its own command: the NAS's worker sent the first copy and received the pull, compute-1's the reverse.
    const steps = (await handle.fetchHistory())
      .events!.map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name)
      .filter(Boolean);
    expect(steps).toEqual(
      expect.arrayContaining([
        'computeStreamListen',
        'computeStreamReceive',
        'volumeStreamSend',
        'volumeStreamListen',
        'volumeStreamReceive',
        'computeStreamSend',
      ]),
    );
    expect(steps).not.toContain('volumePull');
    expect(steps).not.toContain('computeReceive');
    const logOf = (host: string, role: string) =>
      fs.readFileSync(state.workers.find((w) => w.host === host && w.role === role)!.log, 'utf8');
    expect(logOf('nas-0', 'nas')).toMatch(/"argv":\["zfs","send",[^\n]*"msg":"stream sent"/);
    expect(logOf('compute-1', 'compute')).toMatch(/"argv":\["zfs","recv",[^\n]*"msg":"stream received"/);

    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x3c 4M 1M', nodeCopy]);
    expect((await cli('unmap', 'vm-s')).status).toBe(0);
    expect(await onNas('vm-s', '0x3c', '4M')).toBe(true);
    expect(fs.existsSync(nodeCopy)).toBe(false);
    expect((await cli('delete-volume', 'vm-s')).status).toBe(0);
    expect(await census()).toEqual(before);
  }, 300_000);

  it('a compute host cut off while it attaches: the map fails and the NAS keeps no clone and no target', async () => {
    const before = await census();
    const map = cli(
      'map',
      'vm-cut',
      '--image',
      `${image}:v1`,
      '--nas',
      'nas-0',
      '--compute',
      'compute-1',
      '--wait',
      '5',
    );
    await until('compute-1 to start attaching', () => fs.existsSync(attaching), 120_000);
    // The NAS has cloned and exported by now.
    expect(await census()).toMatchObject({ targets: before.targets + 1, clones: before.clones + 1 });
    await setLink(state, 'compute-1', 'down');
    fs.writeFileSync(release, '');
    const failed = await map;
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/map of vm-cut failed/);
    const view = await client.workflow.getHandle(volumeWorkflowId('vm-cut')).query(volumeQuery);
    expect(view.phase).not.toBe('mapped');
    expect(view.storage).toBeUndefined();
    expect(view.export).toBeUndefined();
    expect(await census()).toEqual(before);
    await setLink(state, 'compute-1', 'up');
  }, 300_000);

  it('down leaves no process, namespace, veth, bridge, mount, claim or tgtd socket behind', async () => {
    const pids = [...state.workers.map((w) => w.pid), state.tgt.pid!];
    expect(pids.every(alive)).toBe(true);
    const before = await census();
    expect(before).toMatchObject({ namespaces: 7, links: 8 });
    await downHosts(readHostsState(clusterDir)!);
    expect(pids.filter(alive)).toEqual([]);
    expect((await run(['ip', 'netns', 'list'])).stdout).not.toContain(state.prefix);
    expect(fs.readdirSync('/sys/class/net').filter((l) => l.startsWith(state.prefix))).toEqual([]);
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(`/run/netns/${state.prefix}-`);
    expect((await run(['ip', '-4', '-o', 'addr', 'show'])).stdout).not.toContain(`inet ${state.gateway}/`);
    expect(fs.existsSync(`/var/run/tgtd/socket.${state.tgt.controlPort}`)).toBe(false);
    expect(fs.existsSync(`/run/imgflow/claims/subnet-${state.subnet}`)).toBe(false);
    expect(readHostsState(clusterDir)).toBeUndefined();
  });
});
