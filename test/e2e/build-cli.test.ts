/**
 * `imgflow build` end to end: a recipe becomes a version of its image's lineage through the
 * build workflow, on real tools (tarball source, prepare, ext4 + qcow2, rsync into the store);
 * builds of one image queue up; a missing builder fails in bounded time; bad recipes start nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { historyQuery, lineageWorkflowId } from '../../workflows/lineage/messages.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

describe('imgflow build', () => {
  requireTools('tar', 'mkfs.ext4', 'qemu-img', 'rsync');
  const dir = tempDir();
  const host = uniqueQueue('nas');
  const config = loadConfig({ home: path.join(dir, 'home'), host }, {});
  const run = createRunner(memoryLogger().logger);
  const activities = {
    'builder.x86_64': {
      ...createHostActivities({ role: 'builder', config, arch: 'x86_64', run }),
      ...createBuilderActivities({ run, config }),
    },
    [`nas.${host}`]: createNasActivities({ run, config }),
  };
  const cli = (...args: string[]) =>
    imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', config.home, ...args], {
      IMGFLOW_USER: 'alice',
    });

  async function recipe(image: string, arch = 'x86_64'): Promise<string> {
    const tree = path.join(dir, `tree-${image}`);
    for (const [file, content] of Object.entries({
      'etc/os-release': 'ID=debian\n',
      'var/lib/dpkg/status':
        'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2\n',
      'var/log/syslog': 'old log lines\n',
    })) {
      fs.mkdirSync(path.dirname(path.join(tree, file)), { recursive: true });
      fs.writeFileSync(path.join(tree, file), content);
    }
    const tarball = path.join(dir, `${image}.tar.gz`);
    await run(['tar', '--numeric-owner', '-C', tree, '-czf', tarball, '.']);
    const file = path.join(dir, `${image}.yaml`);
    fs.writeFileSync(
      file,
      `image: ${image}\narch: ${arch}\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball}\n    sha256: ${await sha256File(tarball)}\nprepare:\n  hostname: node\noutputs: [qcow2]\n`,
    );
    return file;
  }

  it('records a version with its report, artifacts in the store checked by digest', async () => {
    const file = await recipe('tarred');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const built = await cli('build', file, '-m', 'first build', '--store', host);
      expect(built.stderr).toBe('');
      expect(built.status).toBe(0);
      expect(built.stdout).toMatch(/^PHASE\s+TIME\s+\+\/- PACKAGES\s+\+\/- SIZE\s+PACKAGES\s+SIZE/m);
      expect(built.stdout).toMatch(/^tarball\s.*\s2\s/m);
      expect(built.stdout).toMatch(/^TOTAL\s/m);
      expect(built.stdout).toMatch(/^version\s+v1 .* by alice: first build$/m);

      const listed = await cli('--json', 'versions', 'tarred');
      const [v1] = JSON.parse(listed.stdout) as VersionRecord[];
      expect(v1).toMatchObject({ id: 'v1', by: 'alice', message: 'first build', packages: 2, os: 'debian-12' });
      const artifact = v1!.artifacts[0]!;
      expect(artifact.path).toBe(path.join(config.home, 'nas', host, 'store', 'tarred', 'v1', 'tarred-v1.qcow2'));
      expect(await sha256File(artifact.path)).toBe(artifact.sha256);
      // The version keeps its build log: every command its phases ran.
      expect(v1!.log?.path).toBe(path.join(config.home, 'nas', host, 'store', 'tarred', 'v1', 'build.log'));
      const log = fs.readFileSync(v1!.log!.path, 'utf8');
      expect(log).toMatch(/^\[tarball\] \$ tar .*\(exit 0, /m);
      expect(log).toMatch(/^\[pack\] \$ qemu-img convert -p -f raw -O qcow2 /m);
      expect(await sha256File(v1!.log!.path)).toBe(v1!.log!.sha256);
      expect(fs.existsSync(path.join(config.home, 'builder', 'x86_64', 'builds'))).toBe(true);
      expect(fs.readdirSync(path.join(config.home, 'builder', 'x86_64', 'builds'))).toEqual([]);

      const report = await cli('report', 'tarred:v1');
      expect(report.stdout).toBe(built.stdout);
      await saveHistory('buildWorkflow-log', client.workflow.getHandle('build-tarred-1'));
    });
    await connection.close();
  });

  it('tags the version, gates prod on a test result, promotes and rolls back, through the CLI', async () => {
    const { connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const tagged = await cli('--json', 'tag', 'tarred');
      expect(tagged.status).toBe(0);
      const tag = (JSON.parse(tagged.stdout) as { name: string; version: string }).name;
      expect(tag).toMatch(/^\d{4}(-\d{2}){5}-RELEASE-by-alice$/);
      expect((await cli('tag', 'tarred', '--version', 'v1', '--name', 'golden')).status).toBe(0);
      const duplicate = await cli('tag', 'tarred', '--name', 'golden');
      expect([duplicate.status, duplicate.stderr.trim()]).toEqual([
        2,
        'imgflow: name: expected a tag name not yet used (golden is v1), got "golden"',
      ]);

      expect((await cli('promote', 'tarred', '--tag', 'golden', '--to', 'test')).status).toBe(0);
      const gated = await cli('promote', 'tarred', '--tag', 'golden', '--to', 'prod');
      expect(gated.stderr).toMatch(
        /^imgflow: tag: expected a tag with a passed test result to promote to gated channel prod/,
      );
      expect((await cli('test-result', 'tarred', '--tag', 'golden', '--passed', '--note', 'booted c1')).status).toBe(0);
      expect((await cli('promote', 'tarred', '--tag', 'golden', '--to', 'prod')).status).toBe(0);
      const noHistory = await cli('rollback', 'tarred', '--channel', 'prod');
      expect(noHistory.stderr).toMatch(/earlier entry to roll back to \(prod has none usable\)/);

      // A site gates its own channels: staging now needs a passed test, prod no longer does.
      expect((await cli('gate', 'tarred', '--channels', 'staging')).stdout.trim()).toBe('gated: staging');
      const staging = await cli('promote', 'tarred', '--tag', tag, '--to', 'staging');
      expect([staging.status, staging.stderr]).toEqual([
        2,
        expect.stringMatching(
          /^imgflow: tag: expected a tag with a passed test result to promote to gated channel staging/,
        ),
      ]);
      expect((await cli('promote', 'tarred', '--tag', tag, '--to', 'prod')).status).toBe(0);
      for (const args of [['--channels', 'Prod!'], [], ['--none', '--channels', 'prod']]) {
        const refused = await cli('gate', 'tarred', ...args);
        expect([refused.status, refused.stderr.trim().split('\n').length]).toEqual([2, 1]);
      }

      const channels = await cli('channels', 'tarred');
      expect(channels.stdout).toMatch(/^CHANNEL\s+GATED\s+TAG\s+VERSION/);
      expect(channels.stdout).toMatch(new RegExp(`^prod\\s+no\\s+${tag}\\s+v\\d+\\s+promote`, 'm'));
      expect(channels.stdout).toMatch(/^staging\s+yes\s+(-\s+)*0$/m);
      const tags = await cli('tags', 'tarred');
      expect(tags.stdout.trim().split('\n')).toHaveLength(3);
      const bad = await cli('promote', 'tarred', '--tag', 'golden', '--to', 'Prod!');
      expect([bad.status, bad.stderr.trim()]).toEqual([
        2,
        'imgflow: --to: expected a channel name of 1-32 lower-case letters, digits or "-", got "Prod!"',
      ]);
    });
    await connection.close();
  });

  it('queues a second build of the same image behind the first, and says so', async () => {
    const file = await recipe('queued');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const [a, b] = await Promise.all([
        cli('build', file, '-m', 'one', '--store', host),
        cli('build', file, '-m', 'two', '--store', host),
      ]);
      expect([a.status, b.status]).toEqual([0, 0]);
      expect(`${a.stderr}${b.stderr}`).toMatch(
        /queued is already building: waiting for build-queued-\d+ to finish first/,
      );
      const { entries: history } = await client.workflow.getHandle(lineageWorkflowId('queued')).query(historyQuery, {});
      expect(history.filter((e) => e.op === 'register').map((e) => e.detail.split(' ')[0])).toEqual(['v1', 'v2']);
      await saveHistory('lineageWorkflow-builds', client.workflow.getHandle(lineageWorkflowId('queued')));
    });
    await connection.close();
  });

  it('fails within its bound when no builder of the arch is running', async () => {
    const file = await recipe('armed', 'aarch64');
    const { connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const result = await cli('build', file, '--store', host, '--builder-wait', '2');
      expect(result.status).toBe(1);
      expect(result.stderr.trim()).toMatch(/^imgflow: .*no builder for aarch64 is running/);
    });
    await connection.close();
  });

  it('refuses a store no NAS worker serves before anything starts', async () => {
    const file = await recipe('nowhere');
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const result = await cli('build', file, '--store', 'nas-without-worker');
      expect(result.status).toBe(2);
      expect(result.stderr.trim()).toMatch(
        /^imgflow: --store: expected a NAS whose worker is running \(nothing polls nas\.nas-without-worker\), got "nas-without-worker"$/,
      );
      const started = await client.workflow
        .getHandle(lineageWorkflowId('nowhere'))
        .describe()
        .catch((e: Error) => e.name);
      expect(started).toBe('WorkflowNotFoundError');
    });
    await connection.close();
  });

  it('refuses a bad recipe in one line and starts nothing', async () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(
      file,
      'image: ../etc\narch: x86_64\nos: debian-12\nsource:\n  debootstrap: {suite: bookworm}\ncolour: blue\n',
    );
    const result = await cli('build', file);
    expect(result.status).toBe(2);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^imgflow: colour: expected a known key .*; image: expected a name/);
  });

  it('refuses capturing the builder itself in one line, and records it in the version when the recipe allows it', async () => {
    // Only /etc/host* of this machine, so the allowed capture stays small.
    const excludes = `['/[!e]*', '/e[!t]*', '/etc/[!h]*', '/etc/h[!o]*', '/etc/ho[!s]*']`;
    const capture = (image: string, allow: string) => {
      const file = path.join(dir, `${image}.yaml`);
      fs.writeFileSync(
        file,
        `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n  capture:\n    from: /./\n    excludes: ${excludes}\n${allow}outputs: [qcow2]\n`,
      );
      return file;
    };
    const refused = await cli('build', capture('builder-self', ''), '--store', host);
    expect(refused.status).toBe(2);
    expect(refused.stderr.trim().split('\n')).toEqual([
      'imgflow: source.capture.allowBuilderRoot: expected true to capture the builder host itself (source.capture.from "/./" is its root filesystem)',
    ]);

    const { connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const built = await cli(
        '--json',
        'build',
        capture('builder-self', '    allowBuilderRoot: true\n'),
        '--store',
        host,
      );
      expect(built.status, built.stderr).toBe(0);
      const version = JSON.parse(built.stdout) as VersionRecord;
      expect(version).toMatchObject({ id: 'v1', capturedBuilderRoot: true, provenance: { source: 'capture of /./' } });
      const report = await cli('report', 'builder-self:v1');
      expect(report.stdout).toMatch(/^source\s+capture of \/\.\/ \(the builder host itself: allowBuilderRoot\)$/m);
    });
    await connection.close();
  });
});
