import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRunner } from '../../activities/runner.js';
import { prepareRoot } from '../../activities/builder/prepare.js';
import type { PrepareOptions } from '../../activities/builder/recipe.js';
import { fixRoot, formatBreaches, validateRoot } from '../../activities/builder/validate.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const OPTIONS: PrepareOptions = {
  hostname: 'compute',
  network: 'remove',
  removeServices: ['cron', 'ssh.socket'],
  private: [{ dir: '/var/lib/private', exclude: [] }],
  shared: false,
  allowPasswordHashes: false,
};

function write(root: string, inside: string, content = 'x\n'): void {
  const file = path.join(root, inside);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

function link(root: string, inside: string, target: string): void {
  const file = path.join(root, inside);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.symlinkSync(target, file);
}

const scratch = tempDir();

/**
 * A tree with everything preparation removes: runtime leftovers, logs, a machine's identity, an
 * enabled service, a password hash. Some symlinks point at host files outside the tree, which
 * must stay untouched.
 */
function brokenImage(): { root: string; outside: string } {
  const dir = fs.mkdtempSync(path.join(scratch, 'image-'));
  const root = path.join(dir, 'root');
  const outside = path.join(dir, 'host-file');
  fs.writeFileSync(outside, 'host data\n');
  fs.mkdirSync(path.join(dir, 'host-dir'));
  fs.writeFileSync(path.join(dir, 'host-dir', 'keep'), 'keep\n');
  write(root, 'proc/1/status');
  write(root, 'sys/kernel/x');
  write(root, 'dev/null-copy');
  write(root, 'run/lock/x');
  write(root, 'tmp/junk');
  link(root, 'mnt', path.join(dir, 'host-dir'));
  write(root, 'var/log/syslog', 'boot messages\n');
  write(root, 'var/log/apt/history.log', 'installed things\n');
  link(root, 'var/log/host.log', outside);
  write(root, 'etc/mtab', 'proc /proc proc rw 0 0\n');
  write(root, 'etc/hostname', 'builder7\n');
  write(root, 'etc/machine-id', '0123456789abcdef0123456789abcdef\n');
  write(root, 'etc/udev/rules.d/70-persistent-net.rules', 'SUBSYSTEM=="net"\n');
  write(root, 'etc/ssh/ssh_host_ed25519_key', 'private\n');
  write(root, 'etc/ssh/ssh_host_ed25519_key.pub', 'public\n');
  write(root, 'etc/ssh/sshd_config', 'PermitRootLogin no\n');
  write(root, 'var/lib/dhcp/dhclient.eth0.leases', 'lease {}\n');
  link(root, 'etc/systemd/system/multi-user.target.wants/cron.service', '/lib/systemd/system/cron.service');
  link(root, 'etc/systemd/system/sockets.target.wants/ssh.socket', '/lib/systemd/system/ssh.socket');
  write(
    root,
    'etc/shadow',
    'root:$6$salt$hashhashhash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:!:19000::::::\n',
  );
  return { root, outside };
}

describe('prepare and validate on a synthetic root', () => {
  it('flags every breach of a broken image, one per rule and path', async () => {
    const { root } = brokenImage();
    const breaches = await validateRoot(root, OPTIONS);
    const found = breaches.map((b) => `${b.rule} ${b.path}`);
    expect(found).toEqual(
      expect.arrayContaining([
        'empty-dir /proc',
        'empty-dir /sys',
        'empty-dir /dev',
        'empty-dir /run',
        'empty-dir /tmp',
        'empty-dir /mnt',
        'log-truncated /var/log/syslog',
        'log-truncated /var/log/apt/history.log',
        'mtab-link /etc/mtab',
        'hostname /etc/hostname',
        'machine-id /etc/machine-id',
        'network-identity /etc/udev/rules.d/70-persistent-net.rules',
        'network-identity /etc/ssh/ssh_host_ed25519_key',
        'network-identity /etc/ssh/ssh_host_ed25519_key.pub',
        'network-identity /var/lib/dhcp/dhclient.eth0.leases',
        'service-disabled /etc/systemd/system/multi-user.target.wants/cron.service',
        'service-masked /etc/systemd/system/cron.service',
        'service-disabled /etc/systemd/system/sockets.target.wants/ssh.socket',
        'service-masked /etc/systemd/system/ssh.socket',
        'password-hash /etc/shadow',
      ]),
    );
    expect(found).toHaveLength(20);
    expect(formatBreaches(breaches).split('\n')).toHaveLength(20);
  });

  it('fixes the image: nothing left to flag, host files behind symlinks untouched', async () => {
    const { root, outside } = brokenImage();
    const { before, after } = await fixRoot(root, OPTIONS);
    expect(before.length).toBe(20);
    expect(after).toEqual([]);
    expect(await validateRoot(root, OPTIONS)).toEqual([]);

    expect(fs.readFileSync(outside, 'utf8')).toBe('host data\n');
    expect(fs.readFileSync(path.join(path.dirname(root), 'host-dir', 'keep'), 'utf8')).toBe('keep\n');
    expect(fs.lstatSync(path.join(root, 'mnt')).isDirectory()).toBe(true);
    for (const dir of ['proc', 'sys', 'dev', 'run', 'tmp', 'mnt'])
      expect(fs.readdirSync(path.join(root, dir))).toEqual([]);
    expect(fs.statSync(path.join(root, 'tmp')).mode & 0o7777).toBe(0o1777);
    expect(fs.statSync(path.join(root, 'var/log/syslog')).size).toBe(0);
    expect(fs.readlinkSync(path.join(root, 'etc/mtab'))).toBe('/proc/self/mounts');
    expect(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8')).toBe('compute\n');
    expect(fs.statSync(path.join(root, 'etc/machine-id')).size).toBe(0);
    expect(fs.existsSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'etc/ssh/sshd_config'))).toBe(true);
    expect(fs.readlinkSync(path.join(root, 'etc/systemd/system/cron.service'))).toBe('/dev/null');
    expect(fs.readFileSync(path.join(root, 'etc/shadow'), 'utf8')).toMatch(/^root:\*:19000/);
  });

  it('is idempotent: preparing a prepared tree changes nothing', async () => {
    const { root } = brokenImage();
    await prepareRoot(root, OPTIONS);
    const again = await prepareRoot(root, OPTIONS);
    expect(again).toMatchObject({ emptied: [], truncatedLogs: 0, removedIdentity: [], lockedPasswords: 0 });
  });

  it('keeps identity and password hashes when the recipe says so', async () => {
    const { root } = brokenImage();
    const keep: PrepareOptions = {
      network: 'keep',
      removeServices: [],
      private: [],
      shared: true,
      allowPasswordHashes: true,
    };
    await prepareRoot(root, keep);
    expect(await validateRoot(root, keep)).toEqual([]);
    expect(fs.readFileSync(path.join(root, 'etc/machine-id'), 'utf8')).toMatch(/^0123/);
    expect(fs.existsSync(path.join(root, 'etc/ssh/ssh_host_ed25519_key'))).toBe(true);
    expect(fs.readFileSync(path.join(root, 'etc/shadow'), 'utf8')).toMatch(/^root:\$6\$/);
    expect((await validateRoot(root, OPTIONS)).map((b) => b.rule)).toContain('machine-id');
  });

  it('refuses a tree with a filesystem mounted in it', async () => {
    requireTools('mount', 'umount');
    const run = createRunner(memoryLogger().logger);
    const { root } = brokenImage();
    await run(['mount', '-t', 'tmpfs', 'tmpfs', path.join(root, 'run')]);
    try {
      await expect(prepareRoot(root, OPTIONS)).rejects.toThrow(/filesystems are mounted under it/);
    } finally {
      await run(['umount', path.join(root, 'run')]);
    }
  });
});
