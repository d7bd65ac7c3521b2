/**
 * Lineage operations on real versions built from tarball recipes through the CLI: diff of
 * packages and files, packing under a test name and then the production name (a boot directory
 * with the image's kernel and initrd) that another image cannot take over, packing a VM base and
 * mapping volumes from it, password hashes allowed only by the recipe, retention that keeps what
 * is referenced and deletes the rest's files, a promote racing a gc, remove refused naming the
 * reference, clone, and bad requests refused by validators with no history change. Updates name
 * who asked.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import type { VersionDiff } from '../../activities/nas/diff.js';
import { createNasDiffActivities } from '../../activities/nas/diff.js';
import { createNasPackActivities } from '../../activities/nas/pack.js';
import { createNasRetentionActivities } from '../../activities/nas/retention.js';
import { createNasVolumeActivities } from '../../activities/nas/volumes.js';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createComputeActivities } from '../../activities/compute/index.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { diffWorkflow } from '../../workflows/diff.js';
import {
  gcUpdate,
  historyQuery,
  lineageWorkflowId,
  packUpdate,
  promoteUpdate,
  registerVersionUpdate,
  removeUpdate,
  type GcResult,
  type PackOutcome,
} from '../../workflows/lineage/messages.js';
import { lineageGcWorkflow } from '../../workflows/lineage/gc-workflow.js';
import { volumeQuery, volumeWorkflowId } from '../../workflows/volume/messages.js';
import { fullVersion, gcScheduleId, updateLineage } from '../../starters/lineage-client.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers, expectRejected } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const STATUS = (packages: [string, string][]) =>
  packages
    .map(
      ([name, version]) => `Package: ${name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: ${version}\n`,
    )
    .join('\n');

function filesUnder(dir: string): string[] {
  return fs.existsSync(dir)
    ? (fs.readdirSync(dir, { recursive: true }) as string[])
        .filter((f) => fs.statSync(path.join(dir, f)).isFile())
        .sort()
    : [];
}

/** A symlink in a recipe's tree, pointing at `to`. */
const link = (to: string) => ({ link: to });

describe('lineage operations on real builds', () => {
  requireTools('tar', 'mksquashfs', 'unsquashfs', 'rsync', 'mkfs.ext4', 'qemu-img', 'debugfs');
  const dir = tempDir();
  const host = uniqueQueue('nas');
  const node = uniqueQueue('node');
  const image = uniqueQueue('ops');
  const config = loadConfig({ home: path.join(dir, 'home'), host }, {});
  const nodeConfig = loadConfig({ home: path.join(dir, 'home'), host: node }, {});
  const run = createRunner(memoryLogger().logger);
  const activities = {
    'builder.x86_64': {
      ...createHostActivities({ role: 'builder', config, arch: 'x86_64', run }),
      ...createBuilderActivities({ run, config }),
    },
    [`nas.${host}`]: {
      ...createNasActivities({ run, config }),
      ...createNasVolumeActivities({ run, config }),
      ...createNasDiffActivities(),
      ...createNasRetentionActivities({ config }),
      ...createNasPackActivities({ run, config }),
    },
    [`compute.${node}`]: {
      ...createHostActivities({ role: 'compute', config: nodeConfig, arch: 'x86_64', run }),
      ...createComputeActivities({ run, config: nodeConfig }),
    },
  };
  const store = path.join(config.home, 'nas', host, 'store', image);
  const boot = path.join(config.home, 'nas', host, 'boot');
  const cli = (...args: string[]) =>
    imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', config.home, ...args], {
      IMGFLOW_USER: 'alice',
    });
  // Two kernels, the /vmlinuz and /initrd.img symlinks at the newer one, as Debian's kernel packages leave them.
  const kernels = {
    'boot/vmlinuz-6.1.0-9-amd64': 'old kernel\n',
    'boot/initrd.img-6.1.0-9-amd64': 'old initrd\n',
    'boot/vmlinuz-6.1.0-18-amd64': 'kernel 6.1.0-18\n',
    'boot/initrd.img-6.1.0-18-amd64': 'initrd 6.1.0-18\n',
    vmlinuz: link('boot/vmlinuz-6.1.0-18-amd64'),
    'initrd.img': link('/boot/initrd.img-6.1.0-18-amd64'),
  };

  async function recipe(
    name: string,
    files: Record<string, string | { link: string }>,
    extra = '',
    options: { image?: string; outputs?: string } = {},
  ): Promise<string> {
    const tree = path.join(dir, `tree-${name}`);
    for (const [file, content] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(tree, file)), { recursive: true });
      if (typeof content === 'string') fs.writeFileSync(path.join(tree, file), content);
      else fs.symlinkSync(content.link, path.join(tree, file));
    }
    const tarball = path.join(dir, `${name}.tar.gz`);
    await run(['tar', '--numeric-owner', '-C', tree, '-czf', tarball, '.']);
    const file = path.join(dir, `${name}.yaml`);
    const source = `source:\n  tarball:\n    path: ${tarball}\n    sha256: ${await sha256File(tarball)}\n`;
    fs.writeFileSync(
      file,
      `image: ${options.image ?? image}\narch: x86_64\nos: debian-12\n${extra}${source}outputs: [${options.outputs ?? 'squashfs'}]\n`,
    );
    return file;
  }

  async function build(file: string, message: string): Promise<void> {
    const built = await cli('build', file, '-m', message, '--store', host);
    expect(built.stderr).toBe('');
    expect(built.status).toBe(0);
  }

  it('diffs two builds: a package changed and one added, files added and changed, size delta', async () => {
    const base = {
      'etc/os-release': 'ID=debian\n',
      'etc/motd': 'hello\n',
      'etc/shadow': 'root:*:19000:0:99999:7:::\n',
      ...kernels,
    };
    const a = await recipe('a', {
      ...base,
      'var/lib/dpkg/status': STATUS([
        ['base-files', '12.4'],
        ['bash', '5.2'],
      ]),
    });
    const b = await recipe('b', {
      ...base,
      'etc/motd': 'hello again\n',
      'etc/added': 'new\n',
      'var/lib/dpkg/status': STATUS([
        ['base-files', '12.4'],
        ['bash', '5.3'],
        ['curl', '8.0'],
      ]),
    });
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      await build(a, 'first');
      await build(b, 'second');
      const json = await cli('--json', 'diff', image, 'v1', 'v2');
      expect(json.stderr).toBe('');
      const d = JSON.parse(json.stdout) as VersionDiff;
      expect(d.packages).toEqual({
        added: [{ name: 'curl', version: '8.0', arch: 'amd64' }],
        removed: [],
        changed: [{ name: 'bash', arch: 'amd64', from: '5.2', to: '5.3' }],
      });
      expect(d.files.added).toEqual(['/etc/added']);
      expect(d.files.removed).toEqual([]);
      expect(d.files.changed).toEqual(expect.arrayContaining(['/etc/motd', '/var/lib/dpkg/status']));
      expect(d.files.changed).not.toContain('/etc/os-release');
      const [v1, v2] = await Promise.all(['v1', 'v2'].map((v) => fullVersion(client, image, v)));
      expect(d.bytes).toEqual({ from: v1!.bytes, to: v2!.bytes, delta: v2!.bytes - v1!.bytes });

      const table = await cli('diff', image, 'v1', 'v2');
      expect(table.stdout).toMatch(/^~\s+package\s+bash\s+5\.2\s+5\.3$/m);
      expect(table.stdout).toMatch(/^\+\s+package\s+curl\s+8\.0$/m);
      expect(table.stdout).toMatch(/^v1 -> v2: packages \+1 -0 ~1, files \+1 -0 ~\d+$/m);

      const side = (v: VersionRecord) => ({ id: v.id, bytes: v.bytes, manifests: v.manifests });
      const h = await client.workflow.start(diffWorkflow, {
        taskQueue: 'imgflow',
        workflowId: `diff-${image}`,
        args: [{ image, host, from: side(v1!), to: side(v2!) }],
      });
      expect((await h.result()).packages.changed).toHaveLength(1);
      await saveHistory('diffWorkflow', h);
    });
    await connection.close();
  });

  it('packs under a test name, then the production name with the previous moved aside, kernel and initrd beside the root; hashes only when the recipe allows', async () => {
    const hashed = await recipe(
      'h',
      {
        'etc/os-release': 'ID=debian\n',
        'etc/shadow': 'root:$6$salt$hash:19000:0:99999:7:::\n',
        'var/lib/dpkg/status': STATUS([['bash', '5.2']]),
      },
      'allowPasswordHashes: true\n',
    );
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      for (const [v, tag] of [
        ['v1', 'first'],
        ['v2', 'second'],
      ])
        expect((await cli('tag', image, '--version', v!, '--name', tag!)).status).toBe(0);
      const tried = await cli('--json', 'pack', image, '--tag', 'second', '--as', `${image}-test`);
      expect(tried.stderr).toBe('');
      const testDir = path.join(boot, `${image}-test`);
      const packed = JSON.parse(tried.stdout) as PackOutcome;
      expect(packed).toMatchObject({
        name: `${image}-test`,
        kind: 'netboot',
        version: 'v2',
        host,
        path: testDir,
        kernel: 'boot/vmlinuz-6.1.0-18-amd64',
        initrd: 'boot/initrd.img-6.1.0-18-amd64',
      });
      expect(packed.note).toBeUndefined();
      expect(fs.readdirSync(testDir).sort()).toEqual(['initrd.img', 'root.squashfs', 'version.json', 'vmlinuz']);
      expect(fs.readFileSync(path.join(testDir, 'vmlinuz'), 'utf8')).toBe('kernel 6.1.0-18\n');
      expect(fs.readFileSync(path.join(testDir, 'initrd.img'), 'utf8')).toBe('initrd 6.1.0-18\n');
      expect(fs.readFileSync(path.join(testDir, 'version.json'), 'utf8')).toMatch(/"version":"v2"/);

      expect((await cli('pack', image, '--tag', 'first')).status).toBe(0);
      const prod = await cli('--json', 'pack', image, '--tag', 'second');
      expect(prod.stderr).toBe('');
      expect((JSON.parse(prod.stdout) as { movedAside: string }).movedAside).toMatch(
        new RegExp(`${image}\\.moved\\.aside\\.on\\.\\d{4}(-\\d\\d){5}`),
      );
      const aside = fs.readdirSync(boot).filter((n) => n.startsWith(`${image}.moved.aside.on.`));
      expect(aside).toHaveLength(1);
      expect(fs.readFileSync(path.join(boot, aside[0]!, 'version.json'), 'utf8')).toMatch(/"version":"v1"/);
      expect(fs.readFileSync(path.join(boot, image, 'version.json'), 'utf8')).toMatch(/"version":"v2"/);

      // Every update the CLI sent names the person who ran it in the workflow's history.
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      const accepted = ((await h.fetchHistory()).events ?? [])
        .map((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest)
        .filter((r) => r?.input?.name === 'pack');
      expect(accepted.map((r) => r!.meta!.identity)).toEqual(
        Array(3).fill(expect.stringMatching(/^alice@\S+ \(imgflow \d+\)$/)),
      );

      // The recipe allowed the hashes: the version says so and the pack takes it (an image with no kernel says so).
      await build(hashed, 'with a password');
      expect((await cli('tag', image, '--version', 'v3', '--name', 'third')).status).toBe(0);
      const v3 = await fullVersion(client, image, 'v3');
      expect(v3.allowPasswordHashes).toBe(true);
      const allowed = await cli('--json', 'pack', image, '--tag', 'third', '--as', `${image}-pw`);
      expect(allowed.stderr).toBe('');
      expect(JSON.parse(allowed.stdout)).toMatchObject({
        kind: 'netboot',
        version: 'v3',
        note: expect.stringMatching(/^the image has no kernel \(no boot\/vmlinuz\*\)/),
      });
      expect(fs.readdirSync(path.join(boot, `${image}-pw`)).sort()).toEqual(['root.squashfs', 'version.json']);
      expect((await h.query(historyQuery, { last: 1 })).entries[0]!.detail).toMatch(
        /as netboot .*; the image has no kernel/,
      );

      // The same image in a version whose recording does not carry the recipe's allowance is refused.
      const without = (({ id: _id, allowPasswordHashes: _allowed, ...rest }: VersionRecord) => rest)(v3);
      const old = `${image}-old`;
      await updateLineage(client, old, registerVersionUpdate, {
        ...without,
        message: 'recorded without the allowance',
      });
      await client.schedule.getHandle(gcScheduleId(old)).delete();
      expect((await cli('tag', old, '--name', 'pw')).status).toBe(0);
      // The production name is the first image's: another image packing under it is refused, and it stays as it was.
      const taken = await cli('pack', old, '--tag', 'pw', '--as', image);
      expect([taken.status, taken.stderr.trim()]).toEqual([
        2,
        `imgflow: as: expected a name not taken by another image on ${host} (${image} is the netboot pack of ${image}), got "${image}"`,
      ]);
      expect(fs.readFileSync(path.join(boot, image, 'version.json'), 'utf8')).toMatch(/"version":"v2"/);
      const refused = await cli('pack', old, '--tag', 'pw');
      expect([refused.status, refused.stderr.trim()]).toEqual([
        2,
        `imgflow: ${old}:v1 has password hashes in /etc/shadow (root); refusing to pack it (its recipe does not set allowPasswordHashes)`,
      ]);
      expect(fs.existsSync(path.join(boot, old))).toBe(false);
      await client.workflow.getHandle(lineageWorkflowId(old)).terminate('test done');

      expect((await cli('revoke', image, '--version', 'v3', '--reason', 'password left in')).status).toBe(0);
      await expectRejected(
        h,
        () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'third' }] }),
        /v3 was revoked by alice: password left in/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'nope' }] }),
        /tag: expected a tag of/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'first', maxRootBytes: 10 }] }),
        /root image fits the cap of 10 bytes/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'first', as: '../etc' }] }),
        /as: expected/,
      );
      await expectRejected(
        h,
        () => h.executeUpdate(packUpdate, { args: [{ by: 'alice', tag: 'first', kind: 'vm' }] }),
        /kind: expected a kind v1 can be packed as \(it has squashfs: netboot needs squashfs, vm qcow2 or raw\)/,
      );
      const badKind = await cli('pack', image, '--tag', 'first', '--kind', 'iso');
      expect([badKind.status, badKind.stderr.trim()]).toEqual([
        2,
        'imgflow: --kind: expected netboot or vm, got "iso"',
      ]);
      const cloneRevoked = await cli('clone', image, `${image}-c`, '--version', 'v3');
      expect([cloneRevoked.status, cloneRevoked.stderr]).toEqual([
        2,
        expect.stringMatching(/v3 was revoked by alice: password left in\) to clone/),
      ]);
    });
    await connection.close();
  });

  it('packs a qcow2-only version as a read-only VM base; volumes map from the pack and stay on their version when it moves', async () => {
    const vmImage = `${image}-vm`;
    const vms = path.join(config.home, 'nas', host, 'vm');
    const files = {
      'etc/os-release': 'ID=debian\n',
      'etc/shadow': 'root:*:19000:0:99999:7:::\n',
      'var/lib/dpkg/status': STATUS([['bash', '5.2']]),
    };
    const one = await recipe('vm1', files, '', { image: vmImage, outputs: 'qcow2' });
    const two = await recipe('vm2', { ...files, 'etc/motd': 'second\n' }, '', { image: vmImage, outputs: 'qcow2' });
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      await build(one, 'vm one');
      await build(two, 'vm two');
      for (const [v, tag] of [
        ['v1', 'one'],
        ['v2', 'two'],
      ])
        expect((await cli('tag', vmImage, '--version', v!, '--name', tag!)).status).toBe(0);
      const h = client.workflow.getHandle(lineageWorkflowId(vmImage));

      const packed = await cli('--json', 'pack', vmImage, '--tag', 'one', '--as', 'web');
      expect(packed.stderr).toBe('');
      expect(JSON.parse(packed.stdout)).toMatchObject({
        name: 'web',
        kind: 'vm',
        format: 'qcow2',
        version: 'v1',
        host,
        path: path.join(vms, 'web'),
      });
      const stored = (await fullVersion(client, vmImage, 'v1')).artifacts.find((a) => a.format === 'qcow2')!;
      const published = path.join(vms, 'web', 'base.qcow2');
      expect(fs.statSync(published).ino).toBe(fs.statSync(stored.path).ino);
      expect(fs.statSync(published).mode & 0o222).toBe(0);
      expect(await sha256File(published)).toBe(stored.sha256);
      const asNetboot = await cli('pack', vmImage, '--tag', 'one', '--kind', 'netboot');
      expect([asNetboot.status, asNetboot.stderr.trim()]).toEqual([
        2,
        'imgflow: kind: expected a kind v1 can be packed as (it has qcow2: netboot needs squashfs, vm qcow2 or raw), got "netboot"',
      ]);

      const mapA = await cli('map', 'vol-a', '--image', `${vmImage}%web`, '--nas', host, '--compute', node);
      expect([mapA.status, mapA.stderr]).toEqual([0, '']);
      expect((await client.workflow.getHandle(volumeWorkflowId('vol-a')).query(volumeQuery)).base).toEqual({
        image: vmImage,
        version: 'v1',
      });

      const moved = await cli('--json', 'pack', vmImage, '--tag', 'two', '--as', 'web');
      expect(moved.stderr).toBe('');
      const movedAside = (JSON.parse(moved.stdout) as PackOutcome).movedAside!;
      expect(path.basename(movedAside)).toMatch(/^web\.moved\.aside\.on\.\d{4}(-\d\d){5}$/);
      expect(fs.statSync(path.join(movedAside, 'base.qcow2')).ino).toBe(fs.statSync(stored.path).ino);
      expect(fs.readFileSync(path.join(vms, 'web', 'version.json'), 'utf8')).toMatch(/"version":"v2"/);

      const mapB = await cli('map', 'vol-b', '--image', `${vmImage}%web`, '--nas', host, '--compute', node);
      expect([mapB.status, mapB.stderr]).toEqual([0, '']);
      const [a, b] = await Promise.all(
        ['vol-a', 'vol-b'].map((v) => client.workflow.getHandle(volumeWorkflowId(v)).query(volumeQuery)),
      );
      expect([a!.base, b!.base]).toEqual([
        { image: vmImage, version: 'v1' },
        { image: vmImage, version: 'v2' },
      ]);
      const backing = async (device: string) =>
        JSON.parse((await run(['qemu-img', 'info', '-U', '--output=json', device])).stdout)[
          'backing-filename'
        ] as string;
      expect(await backing(a!.storage!.devicePath)).toMatch(new RegExp(`/bases/${vmImage}/v1\\.qcow2$`));

      for (const [ref, error] of [
        [
          `${vmImage}%nope`,
          `imgflow: --image: expected a VM pack of ${vmImage} (web; see imgflow pack --kind vm), got "nope"`,
        ],
        [
          `${image}%${image}-test`,
          `imgflow: --image: expected a VM pack of ${image} (none; see imgflow pack --kind vm), got "${image}-test"`,
        ],
        [
          `${vmImage}%web:v1`,
          `imgflow: --image: expected <image>[:<version or tag>], <image>@<channel> or <image>%<VM pack>, got "${vmImage}%web:v1"`,
        ],
      ]) {
        const bad = await cli('map', 'vol-c', '--image', ref!, '--nas', host, '--compute', node);
        expect([bad.status, bad.stderr.trim()]).toEqual([2, error]);
      }
      const otherNas = await cli(
        'map',
        'vol-c',
        '--image',
        `${vmImage}%web`,
        '--nas',
        'nas-elsewhere',
        '--compute',
        node,
      );
      expect([otherNas.status, otherNas.stderr.trim()]).toEqual([
        2,
        `imgflow: --nas: expected the NAS holding pack web (${host}), got "nas-elsewhere"`,
      ]);

      const removeV2 = await cli('remove', `${vmImage}:v2`);
      expect([removeV2.status, removeV2.stderr]).toEqual([
        2,
        expect.stringContaining(`${vmImage}:v2 is still referenced by tag two, pack web`),
      ]);

      for (const volume of ['vol-a', 'vol-b']) {
        expect((await cli('unmap', volume)).status).toBe(0);
        expect((await cli('delete-volume', volume)).status).toBe(0);
      }
      await client.schedule.getHandle(gcScheduleId(vmImage)).delete();
      await h.terminate('test done');
      await saveHistory('lineageWorkflow-vm', h);
    });
    await connection.close();
  });

  it('keeps referenced versions in a gc racing a promote, deletes the rest, refuses removing a referenced one', async () => {
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      // Three more versions, copies of v1 each with its own files in the store.
      const v1 = await fullVersion(client, image, 'v1');
      for (const n of [4, 5, 6]) {
        fs.cpSync(path.join(store, 'v1'), path.join(store, `v${n}`), { recursive: true });
        const rest = (({ id: _id, ...r }: VersionRecord) => r)(v1);
        await h.executeUpdate(registerVersionUpdate, {
          args: [
            {
              ...rest,
              message: `copy ${n}`,
              artifacts: v1.artifacts.map((a) => ({ ...a, path: a.path.replace('/v1/', `/v${n}/`) })),
            },
          ],
        });
      }
      const before = filesUnder(store);
      const dry = await cli('--json', 'gc', image, '--keep', '1', '--dry-run');
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, removed: ['v4', 'v5'], files: 0 });
      expect(filesUnder(store)).toEqual(before);

      const history = async () => (await h.query(historyQuery, {})).entries.map((e) => e.op);
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
        v3: ['tag third', `pack ${image}-pw`],
        v6: ['newest 1'],
      });
      expect((await history()).slice(ops).sort()).toEqual(['promote', 'remove']);
      const after = filesUnder(store);
      expect(gc.files).toBe(before.length - after.length);
      expect(after.filter((f) => /^v[45]\//.test(f))).toEqual([]);
      expect(after.filter((f) => /^v1\//.test(f))).toEqual(before.filter((f) => /^v1\//.test(f)));
      expect(after.some((f) => f.startsWith('v2/')) && after.some((f) => f.startsWith('v6/'))).toBe(true);

      const refused = await cli('remove', `${image}:v2`);
      expect([refused.status, refused.stderr.trim()]).toEqual([
        2,
        `imgflow: version: expected something no longer referenced (${image}:v2 is still referenced by tag second, channel test, pack ${image}-test, pack ${image}), got "v2"`,
      ]);
      await expectRejected(
        h,
        () => h.executeUpdate(removeUpdate, { args: [{ by: 'alice', version: 'v4' }] }),
        /v4 was removed/,
      );
      await expectRejected(
        h,
        () =>
          h.executeUpdate(removeUpdate, {
            args: [{ by: 'alice', version: 'v1', volumes: [{ volume: 'vm1', version: 'v6' }] }],
          }),
        /still referenced by tag first/,
      );
      await expectRejected(h, () => h.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 0 }] }), /keep: expected/);
      await expectRejected(
        h,
        () =>
          h.executeUpdate(removeUpdate, {
            args: [{ by: 'alice', version: 'v6', volumes: [{ volume: 'vm1', version: 'v6' }] }],
          }),
        /still referenced by volume vm1/,
      );
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
      const copy = await fullVersion(client, `${image}-c`, 'v1');
      expect(copy).toMatchObject({ id: 'v1', origin: { image, version: 'v2' }, by: 'alice' });
      expect(copy.provenance.source).toMatch(new RegExp(`^clone of ${image}:v2 `));
      const tags = await cli('--json', 'tags', image);
      expect(JSON.parse(tags.stdout)).toEqual(
        expect.arrayContaining([expect.objectContaining({ tag: `cloned-to-${image}-c`, version: 'v2' })]),
      );

      const schedule = client.schedule.getHandle(gcScheduleId(image));
      expect((await schedule.describe()).action).toMatchObject({ workflowType: 'lineageGcWorkflow' });
      const h = client.workflow.getHandle(lineageWorkflowId(image));
      const g = await client.workflow.start(lineageGcWorkflow, {
        taskQueue: 'imgflow',
        workflowId: `lineage-gc-run-${image}`,
        args: [{ image, keep: 1 }],
      });
      await g.result();
      await saveHistory('lineageGcWorkflow', g);
      for (const img of [image, `${image}-c`]) await client.schedule.getHandle(gcScheduleId(img)).delete();
      const last: GcResult = await h.executeUpdate(gcUpdate, { args: [{ by: 'alice', keep: 1, dryRun: true }] });
      expect(last.removed).toEqual([]);
      expect((await h.query(historyQuery, {})).entries.filter((e) => e.op === 'gc-failed')).toEqual([]);
      await h.terminate('test done');
      await saveHistory('lineageWorkflow-ops', h);
    });
    await connection.close();
  });
});
