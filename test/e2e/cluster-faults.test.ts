/**
 * Faults across a production site on this machine (the Temporal cluster on a PostgreSQL of this
 * file's own, each host in its network namespace with its own worker, nas-0 storing on ZFS and
 * exporting over its own tgtd, cloud-0 keeping the image catalog), each a test counting clones,
 * targets, mounts and registry entries before and after:
 * - the history service SIGKILLed while a build's hook runs on builder-0, and restarted: the
 *   build finishes, each phase scheduled once and its effect in the image once;
 * - PostgreSQL restarted while an image-list swap on cloud-0 has parked the old image: the swap
 *   ends complete or undone, never half;
 * - nas-0's worker SIGKILLed while its `zfs clone` of a map runs, and brought back by `up`: the
 *   map completes with exactly one clone.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { CONNECTION_ENV } from '../../lib/config.js';
import { connectionSettings } from '../../lib/connection.js';
import { sha256File } from '../../lib/files.js';
import { findOnPath } from '../../lib/which.js';
import { restartService } from '../../starters/cluster/cluster.js';
import { hostHome, readHostsState, type HostsState } from '../../starters/cluster/hosts.js';
import { pidOf } from '../../starters/cluster/services.js';
import { siteDown, siteUp, type SiteOptions, type SiteUp } from '../../starters/cluster/site.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { historyQuery, lineageWorkflowId, registerVersionUpdate } from '../../workflows/lineage/messages.js';
import {
  describeQuery,
  subscriptionWorkflowId,
  syncUpdate,
  type SubscriptionConfig,
  type SyncOutcome,
} from '../../workflows/subscription/messages.js';
import { subscriptionWorkflow } from '../../workflows/subscription/workflow.js';
import { volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { hostsCensus } from '../support/census.js';
import { imgflowAsync, type CliResult } from '../support/cli.js';
import { useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { startFileServer } from '../support/http-server.js';
import { oneImageList, patternedQcow2 } from '../support/imagelists.js';
import { tinyImageTarball } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import { createPki } from '../support/pki.js';
import { usePostgres } from '../support/postgres.js';
import { alive } from '../support/processes.js';
import { testDataConverter } from '../support/temporal.js';
import { requireClusterBinaries, requireTools } from '../support/tools.js';
import { newVersion } from '../support/versions.js';
import { until } from '../support/wait.js';

const NAMESPACE = 'imgflow';
const MiB = 1024 * 1024;
const PENDING_ACTIVITY_STARTED = temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;
/** The volume whose `zfs clone` on nas-0 holds until released (after it has made the clone). */
const HELD_VOLUME = 'vm-held';

/** How many times each activity type was scheduled and completed, and the attempt each ended on, from a workflow's history. */
async function activityRuns(handle: WorkflowHandle): Promise<{
  scheduled: Record<string, number>;
  completed: Record<string, number>;
  attempts: Record<string, number[]>;
}> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled: Record<string, number> = {};
  const completed: Record<string, number> = {};
  const typeOf = new Map<string, string>();
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (!s) continue;
    const type = s.activityType!.name!;
    scheduled[type] = (scheduled[type] ?? 0) + 1;
    typeOf.set(String(e.eventId), type);
  }
  const attempts: Record<string, number[]> = {};
  for (const e of events) {
    const started = e.activityTaskStartedEventAttributes;
    if (started) (attempts[typeOf.get(String(started.scheduledEventId))!] ??= []).push(started.attempt ?? 0);
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const type = typeOf.get(String(done.scheduledEventId))!;
      completed[type] = (completed[type] ?? 0) + 1;
    }
  }
  return { scheduled, completed, attempts };
}

describe('faults across a site: history, PostgreSQL and a NAS worker', () => {
  requireTools('ip', 'nsenter', 'tgtd', 'tgtadm', 'qemu-img', 'qemu-io', 'zfs', 'zpool', 'openssl');
  const home = tempDir('imgflow-cluster-faults-');
  useZfsFuse();
  // Registered before the site's own after-hook, so it stops after the site dropped its databases.
  const postgres = usePostgres();
  const dir = path.join(home, 'cluster');
  const shims = path.join(home, 'shims');
  const cloneHeld = path.join(home, 'clone-held');
  const cloneRelease = path.join(home, 'clone-release');
  const run = createRunner(memoryLogger().logger);
  let options: SiteOptions;
  let site: SiteUp;
  let connection: Connection | undefined;
  let client: Client;
  let store: { dataset: string; mountpoint: string };
  let operatorEnv: Record<string, string>;

  const hosts = (): HostsState => readHostsState(dir)!;
  const imgflow = (args: string[], timeoutMs = 300_000) =>
    imgflowAsync(['--home', path.join(home, 'cli'), ...args], { IMGFLOW_USER: 'alice', ...operatorEnv }, timeoutMs);
  const ok = (r: CliResult) => {
    expect(r.status, r.stderr).toBe(0);
    return r.stdout;
  };
  /** The catalog cloud-0's worker registers into. */
  const catalog = () => new CatalogRegistry({ dir: path.join(hostHome(hosts(), 'cloud-0'), 'catalog') });
  /** Clones, targets and mounts on the hosts, and the images in cloud-0's registry. */
  const census = async () => ({
    ...(await hostsCensus(run, hosts(), store)),
    registry: (await catalog().list()).length,
  });

  beforeAll(async () => {
    requireClusterBinaries();
    // nas-0's zfs: the clone of HELD_VOLUME is made, then the command holds (once) until released.
    const zfs = findOnPath('zfs', `${process.env.PATH ?? ''}:/usr/sbin:/sbin`)!;
    fs.mkdirSync(shims);
    fs.writeFileSync(
      path.join(shims, 'zfs'),
      [
        '#!/bin/sh',
        'case "$*" in',
        `  "clone "*"/volumes/${HELD_VOLUME}")`,
        `    if [ ! -e ${cloneHeld} ]; then`,
        `      ${zfs} "$@" || exit $?`,
        `      echo $$ > ${cloneHeld}`,
        `      while [ ! -e ${cloneRelease} ]; do sleep 0.2; done`,
        '      exit 0',
        '    fi;;',
        'esac',
        `exec ${zfs} "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    options = {
      name: `f-${randomBytes(3).toString('hex')}`,
      dir,
      namespace: NAMESPACE,
      postgresUrl: postgres().url,
      compute: 1,
      codecKeys: inject('codecKeysPath'),
      hostEnv: { 'nas-0': { PATH: `${shims}:${process.env.PATH ?? ''}` } },
    };
    site = await siteUp(options);
    const { operator } = site.cluster;
    const e = CONNECTION_ENV;
    operatorEnv = {
      [e.address]: operator.address,
      [e.namespace]: NAMESPACE,
      [e.certPath]: operator.tls.certPath!,
      [e.keyPath]: operator.tls.keyPath!,
      [e.caPath]: operator.tls.caPath!,
      [e.serverName]: operator.tls.serverName!,
      [e.apiKeyFile]: operator.apiKeyFile,
    };
    connection = await Connection.connect(
      connectionSettings({ address: operator.address, tls: operator.tls, apiKeyFile: operator.apiKeyFile }),
    );
    client = new Client({ connection, namespace: NAMESPACE, dataConverter: testDataConverter() });
    // The NAS's dataset is made by its first volume; it mounts below its pool's mountpoint.
    const [pool, ...below] = site.pool.split('/');
    const poolMountpoint = (await run(['zfs', 'get', '-H', '-o', 'value', 'mountpoint', pool!])).stdout.trim();
    store = { dataset: site.pool, mountpoint: path.join(poolMountpoint, ...below) };
  }, 600_000);

  afterAll(async () => {
    fs.mkdirSync(path.dirname(cloneRelease), { recursive: true });
    fs.writeFileSync(cloneRelease, '');
    await connection?.close();
    if (fs.existsSync(path.join(dir, 'cluster.json'))) await siteDown(dir, { dropDatabases: true });
  }, 300_000);

  it('the history service SIGKILLed while a build runs on builder-0, then restarted: the build finishes, each phase once', async () => {
    const before = await census();
    const image = 'histimg';
    const tarball = await tinyImageTarball(run, home);
    // The hook holds until the test releases it, then leaves its mark in the image: once per run.
    const hook = path.join(home, 'hooks', 'hold.sh');
    fs.mkdirSync(path.dirname(hook), { recursive: true });
    fs.writeFileSync(
      hook,
      '#!/bin/sh\nwhile [ ! -e /tmp/imgflow-release ]; do sleep 0.2; done\necho ran >> /etc/hook-runs\n',
      { mode: 0o755 },
    );
    const recipe = path.join(home, `${image}.yaml`);
    fs.writeFileSync(
      recipe,
      `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball.file}\n    sha256: ${tarball.sha256}\nhooks:\n  image:\n    - name: hold\n      file: hooks/hold.sh\nprepare:\n  hostname: node\noutputs: [raw]\n`,
    );
    const { buildId } = JSON.parse(
      ok(await imgflow(['--json', 'build', recipe, '-m', 'history killed', '--store', 'nas-0', '--no-wait'])),
    ) as { buildId: string };
    const handle = client.workflow.getHandle(buildId);
    await until(
      'the hook to run on builder-0',
      async () =>
        ((await handle.describe()).raw.pendingActivities ?? []).some(
          (a) => a.activityType?.name === 'runHook' && a.state === PENDING_ACTIVITY_STARTED,
        ),
      180_000,
    );
    const root = path.join(
      hostHome(hosts(), 'builder-0'),
      'builder',
      'x86_64',
      'builds',
      buildId.replace(/^build-/, '').slice(0, 64),
      'root',
    );
    expect(fs.existsSync(path.join(root, 'etc'))).toBe(true);

    const killed = pidOf(site.cluster.state, 'history')!;
    const restarted = restartService(dir, 'history');
    // The hook ends while history is dead: its builder reports to a cluster without history.
    await until('the killed history service to be gone', () => !alive(killed));
    fs.writeFileSync(path.join(root, 'tmp', 'imgflow-release'), '');
    expect(await restarted).not.toBe(killed);

    const result = (await handle.result()) as { version: string; record: VersionRecord };
    expect(result.version).toBe('v1');
    const { scheduled, completed, attempts } = await activityRuns(handle);
    console.log(`history killed during a build: activity attempts ${JSON.stringify(attempts)}`);
    // Each phase was asked for once and completed once; a retry would be an attempt of the same scheduled activity.
    for (const phase of ['unpackTarball', 'runHook', 'prepare', 'packOutputs']) {
      expect(scheduled[phase], phase).toBe(1);
      expect(completed[phase], phase).toBe(1);
    }
    expect(result.record.report.map((r) => r.phase)).toEqual(['tarball', 'hook-hold', 'prepare', 'pack']);
    // The hook's effect is in the stored image exactly once, whatever attempt reported it.
    const manifest = fs
      .readFileSync(result.record.manifests.files.path, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { path: string; sha256?: string });
    expect(manifest.find((f) => f.path === '/etc/hook-runs')?.sha256).toBe(
      createHash('sha256').update('ran\n').digest('hex'),
    );
    expect(await sha256File(result.record.artifacts[0]!.path)).toBe(result.record.artifacts[0]!.sha256);

    const { entries } = await client.workflow.getHandle(lineageWorkflowId(image)).query(historyQuery, {});
    expect(entries.filter((e) => e.op === 'register').map((e) => e.detail.split(' ')[0])).toEqual(['v1']);
    expect(fs.readdirSync(path.dirname(path.dirname(root)))).toEqual([]);
    expect(await census()).toEqual(before);
  }, 420_000);

  it('PostgreSQL restarted while a swap has parked the old image: the swap ends complete or undone, never half', async () => {
    const pki = createPki(path.join(home, 'pki'));
    const server = await startFileServer({ host: hosts().gateway });
    try {
      const listId = 'list-faults';
      const bodies = {
        '1.0': patternedQcow2(path.join(home, 'a1.qcow2'), '0x11'),
        '2.0': patternedQcow2(path.join(home, 'a2.qcow2'), '0x22'),
      };
      const publish = oneImageList(server, pki, listId, bodies, 'faults');
      const ofList = async () => catalog().list({ imageList: listId });

      publish('1', '1.0');
      const config: SubscriptionConfig = {
        name: 'faults',
        url: server.url('/list.smime'),
        endorser: { dn: pki.endorser.dn, ca: pki.endorser.caDn },
        caDir: pki.caDir,
        every: '6h',
        newImages: 'accept',
        registry: 'catalog',
        format: 'qcow2',
        stage: false,
        site: 'cloud-0',
        workerWaitSeconds: 120,
      };
      const handle = await client.workflow.start(subscriptionWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: subscriptionWorkflowId(config.name),
        args: [{ config }],
      });
      expect(await handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] })).toMatchObject({ status: 'applied' });
      const old = (await ofList())[0]!;
      // The site's access to the image, which the swap must hand on (or leave in place).
      await catalog().chown(old.id, { userId: 7, groupId: 70 });
      await catalog().chmod(old.id, '644');
      const before = await census();
      const firstRun = (await handle.query(describeQuery)).lastSync!.run;

      publish('2', '2.0');
      const sync = handle.executeUpdate(syncUpdate, { args: [{ by: 'alice' }] }).then(
        (outcome) => outcome,
        () => undefined,
      );
      // Down the moment the registry shows the old image parked, between rename and register.
      const deadline = Date.now() + 180_000;
      while (!(await ofList()).some((i) => i.name.includes('_EXPIRED_'))) {
        if (Date.now() > deadline) throw new Error('the swap never parked the old image');
        await new Promise((r) => setTimeout(r, 5));
      }
      const atRestart = (await ofList()).map((i) => `${i.id}:${i.name}:${i.state}`);
      await postgres().restart({ mode: 'fast', downMs: 5000 });
      console.log(`PostgreSQL restarted with the registry at ${JSON.stringify(atRestart)}`);

      // The update's answer may be lost with the database; the subscription's own record says how the sync ended.
      const outcome: SyncOutcome =
        (await sync) ??
        (await until(
          'the sync to end',
          async () => {
            const view = await handle.query(describeQuery);
            return !view.syncing && view.lastSync && view.lastSync.run > firstRun ? view.lastSync : undefined;
          },
          300_000,
        ));
      expect(['applied', 'partial']).toContain(outcome.status);
      console.log(
        `the swap across the restart: ${outcome.status}, ${JSON.stringify(outcome.outcomes?.map((o) => `${o.identifier} ${o.ok ? 'ok' : 'failed'}: ${o.note ?? ''}`))}`,
      );

      const images = await ofList();
      const current = images.filter((i) => i.name === 'img-a');
      expect(current).toHaveLength(1);
      expect(current[0]).toMatchObject({ state: 'READY', ownerId: 7, groupId: 70, mode: '644' });
      expect(images.filter((i) => i.state === 'INIT' || i.state === 'ERROR')).toEqual([]);
      const parked = images.filter((i: RegistryImage) => i.name.includes('_EXPIRED_'));
      if (parked.length) {
        // Complete: the old one parked, locked and disabled, the new one in its place with the old access.
        expect(outcome.status).toBe('applied');
        expect(current[0]!.template.IMGFLOW_VERSION).toBe('2.0');
        expect(parked).toEqual([
          expect.objectContaining({
            id: old.id,
            name: expect.stringMatching(/^img-a_EXPIRED_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_UTC$/),
            ownerId: 0,
            groupId: 0,
            mode: '700',
            state: 'DISABLED',
          }),
        ]);
        expect(await census()).toEqual({ ...before, registry: before.registry + 1 });
      } else {
        // Undone: the old image back under its name, with its access.
        expect(current[0]).toMatchObject({ id: old.id, template: expect.objectContaining({ IMGFLOW_VERSION: '1.0' }) });
        expect(await census()).toEqual(before);
      }
      await handle.terminate('test done');
    } finally {
      await server.close();
    }
  }, 420_000);

  it("nas-0's worker SIGKILLed during the zfs clone of a map, then brought back by up: the map completes with exactly one clone", async () => {
    const image = 'mapimg';
    const file = path.join(hostHome(hosts(), 'nas-0'), 'nas', 'nas-0', 'store', image, 'v1', `${image}-v1.raw`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await run(['qemu-img', 'create', '-q', '-f', 'raw', file, `${32 * MiB}`]);
    await run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 0 1M', file]);
    await updateLineage(client, image, registerVersionUpdate, {
      ...newVersion(1),
      artifacts: [{ format: 'raw', host: 'nas-0', path: file, sha256: await sha256File(file), bytes: 32 * MiB }],
    });
    const before = await census();
    const clonesOf = async (volume: string) =>
      (await run(['zfs', 'list', '-H', '-r', '-t', 'filesystem', '-o', 'name', `${store.dataset}/volumes`])).stdout
        .split('\n')
        .filter((name) => name === `${store.dataset}/volumes/${volume}`).length;

    const map = imgflow([
      'map',
      HELD_VOLUME,
      '--image',
      `${image}:v1`,
      '--nas',
      'nas-0',
      '--compute',
      'compute-0',
      '--size',
      '1',
    ]);
    await until("nas-0's zfs clone to be under way", () => fs.existsSync(cloneHeld), 180_000);
    const worker = hosts().workers.find((w) => w.host === 'nas-0' && w.role === 'nas')!;
    const others = hosts()
      .workers.filter((w) => w.host !== 'nas-0')
      .map((w) => w.pid);
    process.kill(worker.pid, 'SIGKILL');
    await until('the killed worker to be gone', () => !alive(worker.pid));
    fs.writeFileSync(cloneRelease, '');
    expect(await clonesOf(HELD_VOLUME)).toBe(1);

    // The operator's `up` again starts what is down: nas-0's worker only.
    const again = await siteUp(options);
    const restarted = again.hosts.workers.find((w) => w.host === 'nas-0' && w.role === 'nas')!;
    expect(restarted.pid).not.toBe(worker.pid);
    expect(
      again.hosts.workers
        .filter((w) => w.host !== 'nas-0')
        .map((w) => w.pid)
        .sort(),
    ).toEqual(others.sort());

    const mapped = await map;
    expect(mapped.stderr).toBe('');
    expect(ok(mapped)).toBe(
      `iscsi://${again.hosts.hosts.find((h) => h.name === 'nas-0')!.address}:3260/iqn.2026-01.org.imgflow:nas-0.${HELD_VOLUME}/1\n`,
    );
    const volume = client.workflow.getHandle(volumeWorkflowId(HELD_VOLUME));
    expect((await volume.query(volumeQuery)).phase).toBe('mapped');
    // One clone asked for, finished by a later attempt on the new worker, which found the clone made.
    const { scheduled, completed, attempts } = await activityRuns(volume);
    expect(scheduled.volumeCloneExport).toBe(1);
    expect(completed.volumeCloneExport).toBe(1);
    expect(attempts.volumeCloneExport![0]).toBeGreaterThan(1);
    expect(await clonesOf(HELD_VOLUME)).toBe(1);
    expect(await census()).toEqual({
      ...before,
      targets: before.targets + 1,
      clones: before.clones + 1,
      mounts: before.mounts + 1,
    });

    ok(await imgflow(['unmap', HELD_VOLUME]));
    ok(await imgflow(['delete-volume', HELD_VOLUME]));
    expect(await census()).toEqual(before);
  }, 420_000);
});
