/**
 * Lineage operations on real versions built from tarball recipes through the CLI: diff of
 * packages and files, packing under a test name and then the production name, retention that
 * keeps what is referenced and deletes the rest's files, a promote racing a gc, remove refused
 * naming the reference, clone, and bad requests refused by validators with no history change.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import type { VersionDiff } from '../../activities/nas/diff.js';
import { createNasDiffActivities } from '../../activities/nas/diff.js';
import { createNasPackActivities } from '../../activities/nas/pack.js';
import { createNasRetentionActivities } from '../../activities/nas/retention.js';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { diffWorkflow } from '../../workflows/diff.js';
import { gcUpdate, historyQuery, lineageGcWorkflow, lineageWorkflowId, packUpdate, promoteUpdate, registerVersionUpdate, removeUpdate, versionQuery, type GcResult } from '../../workflows/lineage.js';
import { gcScheduleId } from '../../starters/lineage-client.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers, expectRejected } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const STATUS = (packages: [string, string][]) => packages.map(([name, version]) => `Package: ${name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: ${version}\n`).join('\n');

function filesUnder(dir: string): string[] {
  return fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort() : [];
}

describe('lineage operations on real builds', () => {
  requireTools('tar', 'mksquashfs', 'unsquashfs', 'rsync');
  const dir = tempDir();
  const host = uniqueQueue('nas');
  const image = uniqueQueue('ops');
  const config = loadConfig({ home: path.join(dir, 'home'), host }, {});
  const run = createRunner(memoryLogger().logger);
  const activities = {
    'builder.x86_64': { ...createHostActivities({ role: 'builder', config, arch: 'x86_64', run }), ...createBuilderActivities({ run, config }) },
    [`nas.${host}`]: { ...createNasActivities({ run, config }), ...createNasDiffActivities(), ...createNasRetentionActivities({ config }), ...createNasPackActivities({ run, config }) },
  };
  const store = path.join(config.home, 'nas', host, 'store', image);
  const boot = path.join(config.home, 'nas', host, 'boot');
  const cli = (...args: string[]) => imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', config.home, ...args], { IMGFLOW_USER: 'alice' });

  async function recipe(name: string, files: Record<string, string>, extra = ''): Promise<string> {
    const tree = path.join(dir, `tree-${name}`);
    for (const [file, content] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(tree, file)), { recursive: true });
      fs.writeFileSync(path.join(tree, file), content);
    }
    const tarball = path.join(dir, `${name}.tar.gz`);
    await run(['tar', '--numeric-owner', '-C', tree, '-czf', tarball, '.']);
    const file = path.join(dir, `${name}.yaml`);
    fs.writeFileSync(file, `image: ${image}\narch: x86_64\nos: debian-12\n${extra}source:\n  tarball:\n    path: ${tarball}\n    sha256: ${await sha256File(tarball)}\noutputs: [squashfs]\n`);
    return file;
  }

  async function build(file: string, message: string): Promise<void> {
    const built = await cli('build', file, '-m', message, '--store', host);
    expect(built.stderr).toBe('');
    expect(built.status).toBe(0);
  }

  it('diffs two builds: a package changed and one added, files added and changed, size delta', async () => {
    const base = { 'etc/os-release': 'ID=debian\n', 'etc/motd': 'hello\n', 'etc/shadow': 'root:*:19000:0:99999:7:::\n' };
    const a = await recipe('a', { ...base, 'var/lib/dpkg/status': STATUS([['base-files', '12.4'], ['bash', '5.2']]) });
    const b = await recipe('b', { ...base, 'etc/motd': 'hello again\n', 'etc/added': 'new\n', 'var/lib/dpkg/status': STATUS([['base-files', '12.4'], ['bash', '5.3'], ['curl', '8.0']]) });
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      await build(a, 'first');
      await build(b, 'second');
      const json = await cli('--json', 'diff', image, 'v1', 'v2');
      expect(json.stderr).toBe('');
      const d = JSON.parse(json.stdout) as VersionDiff;
      expect(d.packages).toEqual({ added: [{ name: 'curl', version: '8.0', arch: 'amd64' }], removed: [], changed: [{ name: 'bash', arch: 'amd64', from: '5.2', to: '5.3' }] });
      expect(d.files.added).toEqual(['/etc/added']);
      expect(d.files.removed).toEqual([]);
      expect(d.files.changed).toEqual(expect.arrayContaining(['/etc/motd', '/var/lib/dpkg/status']));
      expect(d.files.changed).not.toContain('/etc/os-release');
      const [v1, v2] = await Promise.all(['v1', 'v2'].map((v) => client.workflow.getHandle(lineageWorkflowId(image)).query(versionQuery, v)));
      expect(d.bytes).toEqual({ from: v1!.bytes, to: v2!.bytes, delta: v2!.bytes - v1!.bytes });

      const table = await cli('diff', image, 'v1', 'v2');
      expect(table.stdout).toMatch(/^~\s+package\s+bash\s+5\.2\s+5\.3$/m);
      expect(table.stdout).toMatch(/^\+\s+package\s+curl\s+8\.0$/m);
      expect(table.stdout).toMatch(/^v1 -> v2: packages \+1 -0 ~1, files \+1 -0 ~\d+$/m);

      const side = (v: VersionRecord) => ({ id: v.id, bytes: v.bytes, manifests: v.manifests });
      const h = await client.workflow.start(diffWorkflow, { taskQueue: 'imgflow', workflowId: `diff-${image}`, args: [{ image, host, from: side(v1!), to: side(v2!) }] });
      expect((await h.result()).packages.changed).toHaveLength(1);
      await saveHistory('diffWorkflow', h);
    });
    await connection.close();
  });

  it('packs under a test name, then the production name with the previous moved aside; refuses hashes and revoked versions', async () => {
    const hashed = await recipe('h', { 'etc/os-release': 'ID=debian\n', 'etc/shadow': 'root:$6$salt$hash:19000:0:99999:7:::\n', 'var/lib/dpkg/status': STATUS([['bash', '5.2']]) }, 'allowPasswordHashes: true\n');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      for (const [v, tag] of [['v1', 'first'], ['v2', 'second']]) expect((await cli('tag', image, '--version', v!, '--name', tag!)).status).toBe(0);
      const tried = await cli('--json', 'pack', image, '--tag', 'second', '--as', `${image}-test`);
      expect(tried.stderr).toBe('');
      expect(fs.readFileSync(path.join(boot, `${image}-test`, 'version.json'), 'utf8')).toMatch(/"version":"v2"/);
      expect(fs.existsSync(path.join(boot, `${image}-test`, 'root.squashfs'))).toBe(true);

      expect((await cli('pack', image, '--tag', 'first')).status).toBe(0);
      const prod = await cli('--json', 'pack', image, '--tag', 'second');
      expect(prod.stderr).toBe('');
      expect((JSON.parse(prod.stdout) as { movedAside: string }).movedAside).toMatch(new RegExp(`${image}\\.moved\\.aside\\.on\\.\\d{4}(-\\d\\d){5}`));
      const aside = fs.readdirSync(boot).filter((n) => n.startsWith(`${image}.moved.aside.on.`));
      expect(aside).toHaveLength(1);
      expect(fs.readFileSync(path.join(boot, aside[0]!, 'version.json'), 'utf8')).toMatch(/"version":"v1"/);
      expect(fs.readFileSync(path.join(boot, image, 'version.json'), 'utf8')).toMatch(/"version":"v2"/);

      await build(hashed, 'with a password');
      expect((await cli('tag', image, '--version', 'v3', '--name', 'third')).status).toBe(0);
      const refused = await cli('pack', image, '--tag', 'third', '--as', `${image}-pw`);
      expect([refused.status, refused.stderr.trim()]).toEqual([2, `imgflow: ${image}:v3 has password hashes in /etc/shadow (root); refusing to pack it`]);
      expect(fs.existsSync(path.join(boot, `${image}-pw`))).toBe(false);

      expect((await cli('revoke', image, '--version', 'v3', '--reason', 'password left in')).status).toBe(0);
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      await expectRejected(h, () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'third' }] }), /v3 was revoked by alice: password left in/);
      await expectRejected(h, () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'nope' }] }), /tag: expected a tag of/);
      await expectRejected(h, () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'first', maxRootBytes: 10 }] }), /root image fits the cap of 10 bytes/);
      await expectRejected(h, () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'first', as: '../etc' }] }), /as: expected/);
      const cloneRevoked = await cli('clone', image, `${image}-c`, '--version', 'v3');
      expect([cloneRevoked.status, cloneRevoked.stderr]).toEqual([2, expect.stringMatching(/v3 was revoked by alice: password left in\) to clone/)]);
    });
    await connection.close();
  });

  it('keeps referenced versions in a gc racing a promote, deletes the rest, refuses removing a referenced one', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      // Three more versions, copies of v1 each with its own files in the store.
      const v1 = await h.query(versionQuery, 'v1');
      for (const n of [4, 5, 6]) {
        fs.cpSync(path.join(store, 'v1'), path.join(store, `v${n}`), { recursive: true });
        const rest = (({ id: _id, ...r }: VersionRecord) => r)(v1);
        await h.executeUpdate(registerVersionUpdate, { args: [{ ...rest, message: `copy ${n}`, artifacts: v1.artifacts.map((a) => ({ ...a, path: a.path.replace('/v1/', `/v${n}/`) })) }] });
      }
      const before = filesUnder(store);
      const dry = await cli('--json', 'gc', image, '--keep', '1', '--dry-run');
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, removed: ['v4', 'v5'], files: 0 });
      expect(filesUnder(store)).toEqual(before);

      const history = async () => (await h.query(historyQuery, {})).map((e) => e.op);
      const ops = (await history()).length;
      const [gc, promoted] = await Promise.all([
        h.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 1 }] }),
        h.executeUpdate(promoteUpdate, { args: [{ by: 'bob', tag: 'second', channel: 'test' }] }),
      ]);
      expect(promoted.version).toBe('v2');
      expect(gc.removed).toEqual(['v4', 'v5']);
      // Whichever ran first, the gc saw a settled state: v2 is kept by its tag and packs either way.
      expect(Object.fromEntries(gc.kept.map((k) => [k.version, k.why.filter((w) => w !== 'channel test')]))).toEqual({
        v1: ['tag first'],
        v2: ['tag second', `pack ${image}-test`, `pack ${image}`],
        v3: ['tag third'],
        v6: ['newest 1'],
      });
      expect((await history()).slice(ops).sort()).toEqual(['promote', 'remove']);
      const after = filesUnder(store);
      expect(gc.files).toBe(before.length - after.length);
      expect(after.filter((f) => /^v[45]\//.test(f))).toEqual([]);
      expect(after.filter((f) => /^v1\//.test(f))).toEqual(before.filter((f) => /^v1\//.test(f)));
      expect(after.some((f) => f.startsWith('v2/')) && after.some((f) => f.startsWith('v6/'))).toBe(true);

      const refused = await cli('remove', `${image}:v2`);
      expect([refused.status, refused.stderr.trim()]).toEqual([2, `imgflow: version: expected something no longer referenced (${image}:v2 is still referenced by tag second, channel test, pack ${image}-test, pack ${image}), got "v2"`]);
      await expectRejected(h, () => h.executeUpdate(removeUpdate, { args: [{ by: 'alice', version: 'v4' }] }), /v4 was removed/);
      await expectRejected(h, () => h.executeUpdate(removeUpdate, { args: [{ by: 'alice', version: 'v1', volumes: [{ volume: 'vm1', version: 'v6' }] }] }), /still referenced by tag first/);
      await expectRejected(h, () => h.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 0 }] }), /keep: expected/);
      await expectRejected(h, () => h.executeUpdate(removeUpdate, { args: [{ by: 'alice', version: 'v6', volumes: [{ volume: 'vm1', version: 'v6' }] }] }), /still referenced by volume vm1/);
      const removed = await cli('--json', 'remove', `${image}:v6`);
      expect(JSON.parse(removed.stdout)).toMatchObject({ removed: ['v6'] });
      expect(filesUnder(path.join(store, 'v6'))).toEqual([]);
    });
    await connection.close();
  });

  it('clones a version into a new image, and runs the daily gc schedule', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const clone = await cli('--json', 'clone', image, `${image}-c`, '--version', 'second');
      expect(clone.stderr).toBe('');
      const copy = await client.workflow.getHandle(lineageWorkflowId(`${image}-c`)).query(versionQuery, 'v1');
      expect(copy).toMatchObject({ id: 'v1', origin: { image, version: 'v2' }, by: 'alice' });
      expect(copy.provenance.source).toMatch(new RegExp(`^clone of ${image}:v2 `));
      const tags = await cli('--json', 'tags', image);
      expect(JSON.parse(tags.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ tag: `cloned-to-${image}-c`, version: 'v2' })]));

      const schedule = client.schedule.getHandle(gcScheduleId(image));
      expect((await schedule.describe()).action).toMatchObject({ workflowType: 'lineageGcWorkflow' });
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      const g = await client.workflow.start(lineageGcWorkflow, { taskQueue: 'imgflow', workflowId: `lineage-gc-run-${image}`, args: [{ image, keep: 1 }] });
      await g.result();
      await saveHistory('lineageGcWorkflow', g);
      for (const img of [image, `${image}-c`]) await client.schedule.getHandle(gcScheduleId(img)).delete();
      const last: GcResult = await h.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 1, dryRun: true }] });
      expect(last.removed).toEqual([]);
      expect((await h.query(historyQuery, {})).filter((e) => e.op === 'gc-failed')).toEqual([]);
      await h.terminate('test done');
      await saveHistory('lineageWorkflow-ops', h);
    });
    await connection.close();
  });
});
