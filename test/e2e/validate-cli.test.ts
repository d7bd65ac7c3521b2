/**
 * `imgflow validate` end to end: a version built with lax preparation (network identity kept, no
 * hostname) breaks stricter rules; validate flags each breach, `--fix` repairs a copy into a new
 * version of the lineage that validates clean, and the stored original is left as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { mountsUnder } from '../../activities/builder/rootfs.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const STRICT = ['--remove-network', '--hostname', 'node1'];

describe('imgflow validate', () => {
  requireTools('tar', 'mkfs.ext4', 'qemu-img', 'rsync', 'mount', 'umount', 'debugfs');
  const dir = tempDir();
  const host = uniqueQueue('nas');
  const image = uniqueQueue('lax');
  const config = loadConfig({ home: path.join(dir, 'home'), host }, {});
  const run = createRunner(memoryLogger().logger);
  afterAll(async () => {
    for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
  });
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

  /** A host's tree as a tarball: logs, a machine-id, an ssh host key and leftovers in /tmp. */
  async function recipe(): Promise<string> {
    const tree = path.join(dir, 'tree');
    for (const [file, content] of Object.entries({
      'etc/os-release': 'ID=debian\n',
      'etc/hostname': 'golden\n',
      'etc/machine-id': '0123456789abcdef0123456789abcdef\n',
      'etc/ssh/ssh_host_ed25519_key': 'not really a key\n',
      'var/lib/dpkg/status': 'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n',
      'var/log/syslog': 'old log lines\n',
      'tmp/leftover': 'x\n',
    })) {
      fs.mkdirSync(path.dirname(path.join(tree, file)), { recursive: true });
      fs.writeFileSync(path.join(tree, file), content);
    }
    const tarball = path.join(dir, 'golden.tar.gz');
    await run(['tar', '--numeric-owner', '-C', tree, '-czf', tarball, '.']);
    const file = path.join(dir, 'lax.yaml');
    fs.writeFileSync(
      file,
      `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball}\n    sha256: ${await sha256File(tarball)}\nprepare:\n  network: keep\noutputs: [qcow2]\n`,
    );
    return file;
  }

  async function fileInImage(qcow2: string, inside: string): Promise<string> {
    const raw = path.join(dir, 'check.raw');
    await run(['qemu-img', 'convert', '-O', 'raw', qcow2, raw]);
    try {
      return (await run(['debugfs', '-R', `cat ${inside}`, raw])).stdout;
    } finally {
      fs.rmSync(raw, { force: true });
    }
  }

  it('flags a version that breaks stricter rules, and --fix records a repaired new version', async () => {
    const file = await recipe();
    const { client, connection } = await testClient();
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      const built = await cli('build', file, '-m', 'lax build', '--store', host);
      expect(built.status, built.stderr).toBe(0);

      // The version's own rules hold: /tmp emptied, logs truncated, mtab linked.
      const clean = await cli('validate', `${image}:v1`);
      expect(clean.stderr).toBe('');
      expect(clean.stdout).toBe(`${image}:v1: ok, no breaches\n`);
      expect(clean.status).toBe(0);

      const flagged = await cli('validate', `${image}:v1`, ...STRICT);
      expect(flagged.status).toBe(1);
      expect(flagged.stdout.trim().split('\n').sort()).toEqual(
        [
          'hostname: /etc/hostname: expected node1, found "golden"',
          'machine-id: /etc/machine-id: 33 bytes, expected an empty file',
          'network-identity: /etc/ssh/ssh_host_ed25519_key: present, expected removed',
          `${image}:v1: 3 breaches`,
        ].sort(),
      );
      const v1 = JSON.parse((await cli('--json', 'report', `${image}:v1`)).stdout) as VersionRecord;
      const v1Sha = await sha256File(v1.artifacts[0]!.path);

      const fixed = await cli('--json', 'validate', `${image}:v1`, '--fix', ...STRICT, '-m', 'strict fix');
      expect(fixed.stderr).toBe('');
      expect(fixed.status).toBe(0);
      const result = JSON.parse(fixed.stdout) as {
        breaches: unknown[];
        fixed: { fixed: unknown[]; remaining: unknown[] };
        registered: VersionRecord;
      };
      expect(result.breaches).toHaveLength(3);
      expect(result.fixed.fixed).toHaveLength(3);
      expect(result.fixed.remaining).toEqual([]);
      expect(result.registered).toMatchObject({
        id: 'v2',
        by: 'alice',
        message: 'strict fix',
        packages: 1,
        os: 'debian-12',
        recipeDigest: v1.recipeDigest,
      });
      expect(result.registered.report.map((r) => r.phase)).toEqual(['open', 'fix', 'pack']);
      expect(result.registered.provenance.source).toMatch(new RegExp(`^fix of ${image}:v1 \\(qcow2 [0-9a-f]{12}\\)$`));

      // The repaired copy is in the store under its own name, checked; the original is untouched.
      const v2 = result.registered.artifacts[0]!;
      expect(v2.format).toBe('qcow2');
      expect(await sha256File(v2.path)).toBe(v2.sha256);
      expect(await sha256File(v1.artifacts[0]!.path)).toBe(v1Sha);
      expect(await fileInImage(v2.path, '/etc/machine-id')).toBe('');
      expect(await fileInImage(v2.path, '/etc/hostname')).toBe('node1\n');
      expect(await fileInImage(v1.artifacts[0]!.path, '/etc/hostname')).toBe('golden\n');

      const again = await cli('validate', image, ...STRICT);
      expect(again.stdout).toBe(`${image}:v2: ok, no breaches\n`);
      expect(again.status).toBe(0);

      const listed = JSON.parse((await cli('--json', 'versions', image)).stdout) as VersionRecord[];
      expect(listed.map((v) => v.id)).toEqual(['v1', 'v2']);
      // Nothing stays on the builder: no work directory, no mount.
      expect(fs.readdirSync(path.join(config.home, 'builder', 'x86_64', 'builds'))).toEqual([]);
      expect(await mountsUnder(dir)).toEqual([]);
      await saveHistory('validateWorkflow', client.workflow.getHandle(result.registered.provenance.workflowId));
    });
    await connection.close();
  });

  it('refuses bad input in one line and starts nothing', async () => {
    await withWorkers({ workflowQueue: 'imgflow', activities }, async () => {
      for (const [args, pattern] of [
        [['validate', '../etc'], /^imgflow: image: expected a name/],
        [['validate', 'lax:v1', '--hostname', 'not a host'], /^imgflow: --hostname: expected a host name/],
        [['validate', 'lax:v1', '--remove-network', '--keep-network'], /^imgflow: --remove-network: expected either/],
        [['validate', `${image}:v9`], /^imgflow: version: expected a version or tag of/],
      ] as const) {
        const result = await cli(...args);
        expect(result.status, result.stderr).toBe(2);
        expect(result.stderr.trim().split('\n')).toHaveLength(1);
        expect(result.stderr).toMatch(pattern);
      }
    });
  });
});
