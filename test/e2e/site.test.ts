/**
 * A whole site on this machine, as a new user brings it up from the README: `imgflow cluster up
 * --compute 2` (Temporal on PostgreSQL behind mutual TLS and tokens, its frontend on the hosts'
 * bridge, each host's worker in its own namespace with its own certificate), then, with the
 * operator's settings from `imgflow cluster env`:
 * - `cluster status` shows every host's worker polling its queue;
 * - a build on builder-0 whose files reach nas-0's store as a stream over the bridge;
 * - builder-0 reaches the package mirror through the gateway's proxy, and nothing else;
 * - a map from nas-0 to compute-1, readable from compute-1 and refused from compute-0;
 * - a viewer's map refused in one line, with nothing started;
 * - the main job across the hosts (`imgflow demo --cluster`): a debootstrap build on builder-0
 *   stored on nas-0, promoted, mapped to compute-1 and refused to compute-0, and a signed list
 *   synced by cloud-0, the changed image taking the name and access of the old one;
 * - `cluster down` leaves no process, namespace, link, pool, target or database behind.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { machineMirror } from '../../activities/builder/recipe.js';
import { cloudRegistry } from '../../activities/cloud/registry/configured.js';
import type { VersionRecord } from '../../common/lineage.js';
import type { DemoSubscriptionSummary } from '../../starters/demo-subscription.js';
import { readHostsState, runOn, type HostsState } from '../../starters/cluster/hosts.js';
import { sitePoolName } from '../../starters/cluster/site.js';
import { readState } from '../../starters/cluster/state.js';
import { imgflowAsync, type CliResult } from '../support/cli.js';
import { useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { tinyImageTarball } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import { requireClusterBinaries, requireTools } from '../support/tools.js';

const IQN = 'iqn.2026-01.org.imgflow';
/** What `imgflow --json demo --cluster` prints, in the order of its steps. */
interface SiteDemo {
  step1: VersionRecord;
  step2: { prod: { version: string } };
  step3: { compute: string; readable: boolean; refusedTo?: string };
  step4: DemoSubscriptionSummary;
}

const REFUSED = Array.from({ length: 255 }, (_, i) => i + 1);

describe('a site on one machine: cluster up --compute', () => {
  requireTools('ip', 'nsenter', 'tgtd', 'tgtadm', 'iscsi-readcapacity16', 'qemu-img', 'zfs', 'zpool', 'wget');
  useZfsFuse();
  const home = tempDir('imgflow-site-');
  const name = `s-${randomBytes(3).toString('hex')}`;
  const dir = path.join(home, 'clusters', name);
  const run = createRunner(memoryLogger().logger);
  let operator: Record<string, string> = {};
  let hosts: HostsState;

  const imgflow = (args: string[], env: Record<string, string> = {}) =>
    imgflowAsync(['--home', home, ...args], { IMGFLOW_USER: 'alice', ...env }, 600_000);
  const cluster = (...args: string[]) => imgflow(['cluster', '--name', name, ...args]);
  const asOperator = (...args: string[]) => imgflow(args, operator);
  const ok = (r: CliResult) => {
    expect(r.stderr.split('\n').filter((l) => l.startsWith('imgflow: '))).toEqual([]);
    expect(r.status, r.stderr).toBe(0);
    return r.stdout;
  };
  const volumeUrl = (volume: string) =>
    `iscsi://${hosts.hosts.find((h) => h.name === 'nas-0')!.address}:3260/${IQN}:nas-0.${volume}/1`;
  const readFrom = (host: string, volume: string) =>
    runOn(hosts, host, ['iscsi-readcapacity16', '-s', `--initiator-name=${IQN}:${host}`, volumeUrl(volume)], {
      okExitCodes: REFUSED,
      timeoutMs: 30_000,
    });

  beforeAll(async () => {
    requireClusterBinaries();
    ok(await cluster('up', '--compute', '2'));
    operator = JSON.parse(ok(await cluster('--json', 'env'))) as Record<string, string>;
    hosts = readHostsState(dir)!;
  }, 600_000);

  afterAll(async () => {
    if (fs.existsSync(path.join(dir, 'cluster.json'))) await cluster('down', '--drop-databases');
  }, 300_000);

  it("shows every host's worker polling its own queue", async () => {
    const status = JSON.parse(ok(await cluster('--json', 'status'))) as {
      hosts: { host: string; queue: string; worker: string; pollers: number }[];
    };
    expect(status.hosts.map((h) => `${h.host} ${h.queue}`).sort()).toEqual(
      [
        'builder-0 builder.x86_64',
        'nas-0 nas.nas-0',
        'compute-0 compute.compute-0',
        'compute-1 compute.compute-1',
        'cloud-0 cloud.cloud-0',
        'control-0 control',
        'control-0 imgflow',
      ].sort(),
    );
    for (const h of status.hosts) {
      expect(h.worker, h.host).toBe('up');
      expect(h.pollers, h.queue).toBeGreaterThan(0);
    }
  });

  it("builds on builder-0 into nas-0's store over the bridge, then maps to compute-1 only", async () => {
    const tarball = await tinyImageTarball(run, home);
    const recipe = path.join(home, 'site.yaml');
    fs.writeFileSync(
      recipe,
      `image: siteimg\narch: x86_64\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball.file}\n    sha256: ${tarball.sha256}\nprepare:\n  hostname: node\noutputs: [raw]\n`,
    );
    const built = await asOperator('build', recipe, '-m', 'across the bridge', '--store', 'nas-0');
    expect(ok(built)).toMatch(/^version\s+v1 .* by alice: across the bridge$/m);
    const v1 = JSON.parse(ok(await asOperator('--json', 'report', 'siteimg'))) as {
      artifacts: { host: string; path: string }[];
      provenance: { builder: string };
    };
    expect(v1.provenance.builder).toBe('builder-0');
    expect(v1.artifacts[0]).toMatchObject({
      host: 'nas-0',
      path: path.join(dir, 'hosts', 'nas-0', 'nas', 'nas-0', 'store', 'siteimg', 'v1', 'siteimg-v1.raw'),
    });
    // The file went as a stream: the NAS received it, and no rsync ran.
    const nasLog = fs.readFileSync(path.join(dir, 'logs', 'nas-0.nas.log'), 'utf8');
    expect(nasLog).toMatch(/"argv":\["dd","of=[^"]*siteimg-v1\.raw[^"]*"/);
    expect(nasLog).not.toMatch(/"argv":\["rsync"/);

    const mapped = await asOperator(
      'map',
      'site-vm',
      '--image',
      'siteimg:v1',
      '--nas',
      'nas-0',
      '--compute',
      'compute-1',
      '--size',
      '1',
    );
    expect(ok(mapped)).toBe(`${volumeUrl('site-vm')}\n`);
    expect((await readFrom('compute-1', 'site-vm')).exitCode).toBe(0);
    expect((await readFrom('compute-0', 'site-vm')).exitCode).not.toBe(0);
    ok(await asOperator('unmap', 'site-vm'));
    ok(await asOperator('delete-volume', 'site-vm'));
  }, 600_000);

  it('lets builder-0 reach the package mirror through the gateway, and nothing else', async () => {
    const mirror = machineMirror();
    expect(mirror, 'the machine names a Debian mirror').toBeDefined();
    const proxy = `http://${hosts.gateway}:${hosts.mirrorProxy!.port}`;
    const fetch = (url: string) =>
      runOn(
        hosts,
        'builder-0',
        ['env', `http_proxy=${proxy}`, 'wget', '-q', '-O', '/dev/null', '--tries=1', '--timeout=30', url],
        { okExitCodes: REFUSED, timeoutMs: 60_000 },
      );
    expect((await fetch(`${mirror!.replace(/\/$/, '')}/dists/bookworm/Release`)).exitCode).toBe(0);
    expect((await fetch('http://example.org/')).exitCode).not.toBe(0);
    // Without the proxy, builder-0 has no way out.
    const direct = await runOn(
      hosts,
      'builder-0',
      [
        'wget',
        '-q',
        '-O',
        '/dev/null',
        '--tries=1',
        '--timeout=5',
        `${mirror!.replace(/\/$/, '')}/dists/bookworm/Release`,
      ],
      { okExitCodes: REFUSED, timeoutMs: 30_000 },
    );
    expect(direct.exitCode).not.toBe(0);
  }, 120_000);

  it("refuses a viewer's map in one line and starts nothing", async () => {
    const viewer = JSON.parse(ok(await cluster('--json', 'env', '--client', 'viewer', '--role', 'viewer'))) as Record<
      string,
      string
    >;
    const before = ok(await asOperator('--json', 'maps'));
    const refused = await imgflow(
      ['map', 'viewer-vm', '--image', 'siteimg:v1', '--nas', 'nas-0', '--compute', 'compute-0'],
      viewer,
    );
    expect(refused.status).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/^imgflow: refused by the Temporal server: this token does not allow that here/);
    expect(ok(await asOperator('--json', 'maps'))).toBe(before);
  }, 300_000);

  it('runs the main job across the hosts: imgflow demo --cluster', async () => {
    // Without the cluster's settings the demo would reach another server, where no host's worker polls.
    const elsewhere = await imgflow(['demo', '--cluster', name]);
    expect(elsewhere.status).toBe(2);
    expect(elsewhere.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        /^imgflow: --address: expected the frontend of cluster s-[0-9a-f]+, 198\.18\.\d+\.1:\d+ \(eval/,
      ),
    ]);
    const demo = JSON.parse(ok(await asOperator('--json', 'demo', '--cluster', name))) as SiteDemo;
    const { step1: built, step2: promoted, step3: mapped, step4: listed } = demo;
    expect(built.provenance.builder).toBe('builder-0');
    expect(built.artifacts.map((a) => a.host)).toEqual(expect.arrayContaining(['nas-0']));
    expect(promoted.prod).toMatchObject({ version: built.id });
    expect(mapped).toMatchObject({ compute: 'compute-1', readable: true, refusedTo: 'compute-0' });
    expect(listed.syncs.map((s) => s.status)).toEqual(['applied', 'applied']);
    // cloud-0's registry: the changed image under its name with the access the site gave the old one.
    expect(listed.registry.current).toMatchObject({ name: 'demo-appliance', mode: '644', version: '2' });
    expect(listed.registry.parked).toMatchObject({
      name: expect.stringMatching(/^demo-appliance_EXPIRED_/),
      state: 'DISABLED',
    });
    const images = await cloudRegistry({ home: path.join(dir, 'hosts', 'cloud-0') }, {}).list({
      imageList: 'imgflow-demo',
    });
    expect(images.map((i) => i.id).sort()).toEqual([listed.registry.current!.id, listed.registry.parked!.id].sort());
    // The volume the demo mapped is gone again.
    expect(JSON.parse(ok(await asOperator('--json', 'maps')))).toEqual([]);
  }, 900_000);

  it('down leaves no process, namespace, link, pool or database behind', async () => {
    const state = readState(dir);
    const prefix = hosts.prefix;
    const pids = [...hosts.workers.map((w) => w.pid), hosts.tgt.pid!, hosts.mirrorProxy!.pid!];
    const pools = async () => (await run(['zpool', 'list', '-H', '-o', 'name'])).stdout.split('\n');
    expect(await pools()).toContain(sitePoolName(dir));
    ok(await cluster('down', '--drop-databases'));
    const alive = (pid: number) =>
      fs.existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    expect(pids.filter(alive)).toEqual([]);
    expect((await run(['ip', 'netns', 'list'])).stdout).not.toContain(prefix);
    expect(fs.readdirSync('/sys/class/net').filter((l) => l.startsWith(prefix))).toEqual([]);
    expect(await pools()).not.toContain(sitePoolName(dir));
    expect(fs.existsSync(dir)).toBe(false);
    const databases = (
      await run([
        'psql',
        '-h',
        state.postgres.host,
        '-p',
        String(state.postgres.port),
        '-U',
        state.postgres.user,
        '-Atc',
        'select datname from pg_database',
      ])
    ).stdout;
    expect(databases).not.toContain(state.databases.temporal);
    expect(databases).not.toContain(state.databases.visibility);
  }, 300_000);
});
