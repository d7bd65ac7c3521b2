import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import type { CaptureSource } from '../../activities/builder/recipe.js';
import { createRunner } from '../../activities/runner.js';
import { loadConfig } from '../../lib/config.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { freePort, startSshd, type TestSshd } from '../support/sshd.js';
import { requireTools } from '../support/tools.js';

function write(root: string, inside: string, content = 'x\n'): string {
  const file = path.join(root, inside);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  return file;
}

/** A small "host root filesystem" with the runtime directories a capture must skip. */
function hostTree(dir: string): string {
  const src = path.join(dir, 'host-root');
  write(src, 'etc/hostname', 'node001\n');
  write(src, 'etc/os-release', 'ID=debian\n');
  for (const runtime of ['proc/cpuinfo', 'sys/kernel/mm', 'dev/sda', 'run/lock/pid', 'tmp/scratch'])
    write(src, runtime);
  write(src, 'var/cache/apt/pkgcache.bin', 'big cache\n');
  write(src, 'home/user/notes.txt.swp', 'swap\n');
  const data = write(src, 'srv/data', 'shared bytes\n');
  fs.linkSync(data, path.join(src, 'srv/data-hardlink'));
  fs.symlinkSync('/srv/data', path.join(src, 'srv/link'));
  const owned = write(src, 'home/user/notes.txt', 'notes\n');
  fs.chownSync(owned, 4321, 4321);
  fs.chmodSync(owned, 0o640);
  return src;
}

function expectCaptured(root: string): void {
  expect(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8')).toBe('node001\n');
  for (const dir of ['proc', 'sys', 'dev', 'run', 'tmp']) expect(fs.readdirSync(path.join(root, dir))).toEqual([]);
  expect(fs.readdirSync(path.join(root, 'var/cache'))).toEqual([]);
  expect(fs.existsSync(path.join(root, 'home/user/notes.txt.swp'))).toBe(false);
  const notes = fs.statSync(path.join(root, 'home/user/notes.txt'));
  expect([notes.uid, notes.gid, notes.mode & 0o777]).toEqual([4321, 4321, 0o640]);
  expect(fs.statSync(path.join(root, 'srv/data')).ino).toBe(fs.statSync(path.join(root, 'srv/data-hardlink')).ino);
  expect(fs.readlinkSync(path.join(root, 'srv/link'))).toBe('/srv/data');
}

describe('capture over rsync', () => {
  const dir = tempDir();
  const config = loadConfig({ home: path.join(dir, 'home'), host: 'testhost' }, {});
  const excludes = ['/var/cache/*', '*.swp'];
  let sshd: TestSshd;
  let src: string;

  beforeAll(async () => {
    requireTools('rsync', 'ssh', 'ssh-keygen');
    src = hostTree(dir);
    sshd = await startSshd(fs.mkdtempSync(path.join(dir, 'sshd-')));
  });
  afterAll(async () => sshd?.stop());

  const activities = () =>
    createBuilderActivities({
      run: createRunner(memoryLogger().logger),
      config,
      ssh: { identityFile: sshd.identityFile, knownHostsFile: sshd.knownHostsFile },
    });
  const remote = (port: number): CaptureSource => ({
    kind: 'capture',
    user: 'root',
    host: '127.0.0.1',
    port,
    path: src,
    excludes,
  });

  it('copies a remote host over ssh, honouring the excludes and keeping links, owners and modes', async () => {
    const { logger, lines } = memoryLogger();
    const builder = createBuilderActivities({
      run: createRunner(logger),
      config,
      ssh: { identityFile: sshd.identityFile, knownHostsFile: sshd.knownHostsFile },
    });
    const result = await builder.capture({ build: 'remote', arch: 'x86_64', source: remote(sshd.port) });
    expect(result).toMatchObject({ phase: 'capture', from: `root@127.0.0.1:${src}`, resumed: false, packages: 0 });
    expect(result.bytes).toBeGreaterThan(0);
    const root = path.join(config.home, 'builder/x86_64/builds/remote/root');
    expectCaptured(root);

    const argv = lines.find((l) => l.msg === 'command' && (l.argv as string[])[0] === 'rsync')!.argv as string[];
    expect(argv).toEqual(
      expect.arrayContaining([
        '-aHAX',
        '--numeric-ids',
        '--delete',
        '--exclude=/proc/*',
        '--exclude=/tmp/*',
        '--exclude=/var/cache/*',
        '--exclude=*.swp',
        '-e',
      ]),
    );
    expect(argv[argv.indexOf('-e') + 1]).toMatch(
      /^ssh -o BatchMode=yes .* -p \d+ -i \S+client_key .*StrictHostKeyChecking=yes$/,
    );

    const again = await builder.capture({ build: 'remote', arch: 'x86_64', source: remote(sshd.port) });
    expect(again.resumed).toBe(true);
  });

  it('copies a local path the same way', async () => {
    const result = await activities().capture({
      build: 'local',
      arch: 'x86_64',
      source: { kind: 'capture', path: src, excludes },
    });
    expect(result.from).toBe(src);
    expectCaptured(path.join(config.home, 'builder/x86_64/builds/local/root'));
  });

  it('fails clearly and within bounds when the host refuses connections', async () => {
    const closed = await freePort();
    const started = Date.now();
    const error = await activities()
      .capture({ build: 'refused', arch: 'x86_64', source: remote(closed), attempts: 2, connectTimeoutSeconds: 2 })
      .catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(
      new RegExp(`^capture: cannot reach 127\\.0\\.0\\.1 port ${closed} after 2 attempts: .*Connection refused`),
    );
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('gives up on a host that accepts but never answers, after the connect timeout', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    try {
      const started = Date.now();
      const error = await activities()
        .capture({ build: 'silent', arch: 'x86_64', source: remote(port), attempts: 2, connectTimeoutSeconds: 2 })
        .catch((e: unknown) => e as Error);
      expect((error as Error).message).toMatch(
        new RegExp(`^capture: cannot reach 127\\.0\\.0\\.1 port ${port} after 2 attempts`),
      );
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      silent.close();
    }
  });

  it('refuses a source that did not pass the recipe rules', async () => {
    await expect(
      activities().capture({ build: 'bad', arch: 'x86_64', source: { ...remote(sshd.port), path: '/srv; rm -rf /' } }),
    ).rejects.toThrow(/^source\.capture\.from: expected an absolute path/);
    await expect(
      activities().capture({ build: '../escape', arch: 'x86_64', source: remote(sshd.port) }),
    ).rejects.toThrow(/^build: expected a name/);
  });
});
