/**
 * The storage daemons driver tests need: zfs-fuse (userspace ZFS) and tgtd (userspace iSCSI
 * target). A daemon already running is used as it is; one that is absent is started and stopped
 * again when the last test file using it is done. Test files run in parallel processes, so users
 * are counted in files under a lock: one per process, a dead process's entry is ignored, and
 * only a daemon the tests started is ever stopped. A missing binary fails loudly. Benchmarks take
 * the same daemons through holdZfsFuse/holdTgtd and createPool, outside vitest's hooks.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import { requireTools } from './tools.js';

const STATE = '/tmp/imgflow-test-daemons';
const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

function sh(argv: string[], timeoutMs = 60_000): string {
  return execFileSync(argv[0]!, argv.slice(1), {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    env: { ...process.env, PATH: SBIN_PATH },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function succeeds(argv: string[], timeoutMs = 10_000): boolean {
  try {
    sh(argv, timeoutMs);
    return true;
  } catch {
    return false;
  }
}

function processAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Live processes whose command name is `name`. */
function pidsOf(name: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name && processAlive(pid);
      } catch {
        return false;
      }
    });
}

function waitUntil(what: string, ok: () => boolean, timeoutMs = 30_000): void {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}

function lockOwner(lock: string): number {
  try {
    return Number(fs.readFileSync(path.join(lock, 'pid'), 'utf8')) || 0;
  } catch {
    return 0;
  }
}

/** A lock directory; one left by a dead process is taken over. */
function withLock<T>(name: string, fn: () => T): T {
  const lock = path.join(STATE, `${name}.lock`);
  fs.mkdirSync(STATE, { recursive: true });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch {
      const owner = lockOwner(lock);
      if (owner && !processAlive(owner)) fs.rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`lock ${lock} is held by ${owner}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

interface Daemon {
  name: string;
  binary: string;
  isUp: () => boolean;
  /** Starts it; returns its pid. */
  start: () => number;
  stop: (pid: number) => void;
}

const zfsFuse: Daemon = {
  name: 'zfs-fuse',
  binary: 'zfs-fuse',
  isUp: () => pidsOf('zfs-fuse').length > 0 && succeeds(['zpool', 'list']),
  start() {
    const pidFile = path.join(STATE, 'zfs-fuse.pid');
    // zfs-fuse refuses to start over a pid file left by an earlier run.
    fs.rmSync(pidFile, { force: true });
    sh(['zfs-fuse', '--pidfile', pidFile]);
    waitUntil('zfs-fuse', () => succeeds(['zpool', 'list']));
    return Number(fs.readFileSync(pidFile, 'utf8').trim());
  },
  stop(pid) {
    process.kill(pid, 'SIGTERM');
    waitUntil('zfs-fuse to exit', () => !processAlive(pid));
    fs.rmSync(path.join(STATE, 'zfs-fuse.pid'), { force: true });
  },
};

const tgtd: Daemon = {
  name: 'tgtd',
  binary: 'tgtd',
  isUp: () => pidsOf('tgtd').length > 0 && succeeds(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target']),
  start() {
    const child = spawn('tgtd', ['-f'], { detached: true, stdio: 'ignore', env: { ...process.env, PATH: SBIN_PATH } });
    child.unref();
    waitUntil('tgtd', () => succeeds(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target']));
    return child.pid!;
  },
  stop(pid) {
    // tgtd ignores SIGTERM; this is its own shutdown request.
    succeeds(['tgtadm', '--op', 'delete', '--mode', 'system']);
    try {
      waitUntil('tgtd to exit', () => !processAlive(pid), 10_000);
    } catch {
      process.kill(pid, 'SIGKILL');
    }
  },
};

function usersDir(daemon: Daemon): string {
  return path.join(STATE, `${daemon.name}.users`);
}

function liveUsers(daemon: Daemon): number[] {
  const dir = usersDir(daemon);
  fs.mkdirSync(dir, { recursive: true });
  const users = fs.readdirSync(dir).map(Number);
  for (const pid of users.filter((p) => !processAlive(p))) fs.rmSync(path.join(dir, String(pid)), { force: true });
  return users.filter(processAlive);
}

/** Marks this process a user of the daemon, starting it if absent; the function returned lets it go. */
function holdDaemon(daemon: Daemon): () => void {
  requireTools(daemon.binary);
  const marker = path.join(STATE, `${daemon.name}.started`);
  withLock(daemon.name, () => {
    liveUsers(daemon);
    if (!daemon.isUp()) fs.writeFileSync(marker, String(daemon.start()));
    fs.writeFileSync(path.join(usersDir(daemon), String(process.pid)), '');
  });
  return () =>
    withLock(daemon.name, () => {
      fs.rmSync(path.join(usersDir(daemon), String(process.pid)), { force: true });
      if (liveUsers(daemon).length > 0 || !fs.existsSync(marker)) return;
      const pid = Number(fs.readFileSync(marker, 'utf8'));
      fs.rmSync(marker, { force: true });
      if (processAlive(pid)) daemon.stop(pid);
    });
}

export function holdZfsFuse(): () => void {
  requireTools('zfs-fuse', 'zpool', 'zfs');
  return holdDaemon(zfsFuse);
}

export function holdTgtd(): () => void {
  requireTools('tgtd', 'tgtadm');
  return holdDaemon(tgtd);
}

/** zfs-fuse for this test file's tests, released after them. */
export function useZfsFuse(): void {
  afterAll(holdZfsFuse());
}

export function useTgtd(): void {
  afterAll(holdTgtd());
}

export interface TestPool {
  name: string;
  mountpoint: string;
}

/** A pool on a sparse file in `dir`; `destroy` removes it. Take zfs-fuse first. */
export function createPool(dir: string, sizeMiB = 512): TestPool & { destroy: () => void } {
  const name = `imgflowt${randomBytes(4).toString('hex')}`;
  const file = path.join(dir, `${name}.img`);
  const mountpoint = path.join(dir, `mnt-${name}`);
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, sizeMiB * 1024 * 1024);
  sh(['zpool', 'create', '-f', '-m', mountpoint, name, file]);
  return { name, mountpoint, destroy: () => destroyPool(name, mountpoint) };
}

/**
 * A pool destroyed after the file's tests (before the daemon is released: hooks run in reverse
 * order). Call after useZfsFuse().
 */
export function throwawayPool(dir: string, sizeMiB = 512): TestPool {
  const { destroy, ...pool } = createPool(dir, sizeMiB);
  afterAll(destroy);
  return pool;
}

/**
 * zfs-fuse calls a pool busy while the kernel still holds files that killed workers or tgtd had
 * open under its mounts; they let go within seconds. Retried for half a minute, then the error
 * names what still holds the mounts.
 */
function destroyPool(name: string, mountpoint: string): void {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (succeeds(['zpool', 'destroy', '-f', name], 60_000)) return;
    if (!succeeds(['zpool', 'list', name])) return;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  }
  const holders = spawnSync('fuser', ['-vm', mountpoint], { encoding: 'utf8' }).stderr.replace(/\s+/g, ' ').trim();
  throw new Error(`zpool ${name} could not be destroyed${holders ? `; held by: ${holders}` : ''}`);
}

/** Targets tgtd currently has, all owners included: for leak checks. */
export function tgtTargetCount(): number {
  return (sh(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target']).match(/^Target \d+:/gm) ?? []).length;
}
