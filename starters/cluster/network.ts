/**
 * The private network of one cluster on this machine: a bridge whose host side is the cluster's
 * gateway (.1, where Temporal's frontend listens) and, per host, a network namespace joined to it
 * by a veth pair. Every name carries the cluster's prefix, so several clusters coexist. Each
 * cluster takes one /24 of the benchmark range 198.18.0.0/15 (never a site's private ranges),
 * claimed under /run so that two clusters coming up at once never pick the same one.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { InputError } from '../../common/names.js';
import type { Run } from '../../activities/runner.js';

/** 198.18.0.0/15 holds 512 networks of 256 addresses. */
export const SUBNETS = 512;
const FIRST_HOST = 10;
const CLAIMS = '/run/imgflow/claims';
const PREFIX = /^imf[0-9a-f]{5}$/;

export function newPrefix(): string {
  return `imf${randomBytes(3).toString('hex').slice(0, 5)}`;
}

export function checkPrefix(value: unknown): string {
  if (typeof value !== 'string' || !PREFIX.test(value)) throw new InputError('prefix', '"imf" and 5 hex digits', value);
  return value;
}

/** The first three octets of subnet `index`: 198.18.0 .. 198.19.255. */
export function subnetBase(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= SUBNETS)
    throw new InputError('subnet', `a whole number from 0 to ${SUBNETS - 1}`, index);
  return `198.${18 + Math.floor(index / 256)}.${index % 256}`;
}

export const gatewayOf = (subnet: number) => `${subnetBase(subnet)}.1`;
export const hostAddress = (subnet: number, slot: number) => `${subnetBase(subnet)}.${FIRST_HOST + slot}`;

/** Interface names stay within the kernel's 15 characters: prefix (8) + at most 4. */
export const names = (prefix: string) => ({
  bridge: `${checkPrefix(prefix)}br`,
  veth: (slot: number) => `${prefix}v${slot}`,
  peer: (slot: number) => `${prefix}p${slot}`,
  netns: (host: string) => `${prefix}-${host}`,
});

export const netnsPath = (netns: string) => `/run/netns/${netns}`;

/** A link in this (the root) network namespace. */
export function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

export function linkState(name: string): 'up' | 'down' | 'absent' {
  if (!linkExists(name)) return 'absent';
  const flags = Number.parseInt(fs.readFileSync(`/sys/class/net/${name}/flags`, 'utf8'), 16);
  return flags & 1 ? 'up' : 'down';
}

/** The /24s of 198.18.0.0/15 that some address on this machine already sits in. */
async function subnetsInUse(run: Run): Promise<Set<number>> {
  const used = new Set<number>();
  for (const m of (await run(['ip', '-4', '-o', 'addr', 'show'])).stdout.matchAll(/inet 198\.(18|19)\.(\d+)\.\d+/g)) {
    used.add((Number(m[1]) - 18) * 256 + Number(m[2]));
  }
  return used;
}

/**
 * Claims one number of `kind` for `owner` (the cluster's state file): the claim file is created
 * exclusively, and one whose owner's state file is gone is taken over.
 */
function claim(kind: string, candidates: Iterable<number>, owner: string, inUse: (n: number) => boolean): number {
  fs.mkdirSync(CLAIMS, { recursive: true, mode: 0o700 });
  for (const n of candidates) {
    if (inUse(n)) continue;
    const file = path.join(CLAIMS, `${kind}-${n}`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(file, owner, { flag: 'wx', mode: 0o600 });
        return n;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const holder = readClaim(file);
        if (holder === owner) return n;
        // Empty: a claim being written this instant.
        if (!holder || fs.existsSync(holder)) break;
        fs.rmSync(file, { force: true });
      }
    }
  }
  throw new Error(`no free ${kind} left to claim`);
}

function readClaim(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Lets a claim go, if `owner` holds it. */
export function releaseClaim(kind: 'subnet' | 'tgt', n: number, owner: string): void {
  const file = path.join(CLAIMS, `${kind}-${n}`);
  if (readClaim(file) === owner) fs.rmSync(file, { force: true });
}

export async function claimSubnet(run: Run, owner: string): Promise<number> {
  const used = await subnetsInUse(run);
  return claim(
    'subnet',
    Array.from({ length: SUBNETS }, (_, i) => i),
    owner,
    (n) => used.has(n),
  );
}

/** tgtd's control port names its socket under /var/run/tgtd: one that nobody's socket uses. */
export function claimTgtControlPort(owner: string): number {
  return claim(
    'tgt',
    Array.from({ length: 1000 }, (_, i) => 4000 + i),
    owner,
    (n) => fs.existsSync(`/var/run/tgtd/socket.${n}`),
  );
}

export async function ensureBridge(run: Run, bridge: string, gateway: string): Promise<void> {
  if (!linkExists(bridge)) await run(['ip', 'link', 'add', bridge, 'type', 'bridge']);
  const addresses = (await run(['ip', '-4', '-o', 'addr', 'show', 'dev', bridge])).stdout;
  if (!addresses.includes(`inet ${gateway}/24`)) await run(['ip', 'addr', 'add', `${gateway}/24`, 'dev', bridge]);
  await run(['ip', 'link', 'set', bridge, 'up']);
}

export interface HostLink {
  netns: string;
  veth: string;
  peer: string;
  address: string;
  bridge: string;
}

/**
 * The host's namespace with `eth0` at its address, cabled to the bridge. Each step looks first,
 * so a second `up` (or one after a crash halfway) finishes what is missing.
 */
export async function ensureHostLink(run: Run, link: HostLink): Promise<void> {
  const inside = (...args: string[]) => run(['ip', '-n', link.netns, ...args]);
  if (!fs.existsSync(netnsPath(link.netns))) await run(['ip', 'netns', 'add', link.netns]);
  if (!linkExists(link.veth)) {
    // A peer whose veth is gone would block the name: veths go in pairs, so it is one left half made.
    await inside('link', 'del', link.peer).catch(() => undefined);
    await run(['ip', 'link', 'add', link.veth, 'type', 'veth', 'peer', 'name', link.peer]);
  }
  if (linkExists(link.peer)) await run(['ip', 'link', 'set', link.peer, 'netns', link.netns]);
  const links = (await inside('-o', 'link', 'show')).stdout;
  if (!/^\d+: eth0[@:]/m.test(links)) await inside('link', 'set', link.peer, 'name', 'eth0');
  if (!(await inside('-4', '-o', 'addr', 'show', 'dev', 'eth0')).stdout.includes(`inet ${link.address}/24`)) {
    await inside('addr', 'add', `${link.address}/24`, 'dev', 'eth0');
  }
  await inside('link', 'set', 'lo', 'up');
  await inside('link', 'set', 'eth0', 'up');
  await run(['ip', 'link', 'set', link.veth, 'master', link.bridge]);
  await run(['ip', 'link', 'set', link.veth, 'up']);
}

/** Processes inside a namespace (none when it is gone). */
export async function pidsIn(run: Run, netns: string): Promise<number[]> {
  if (!fs.existsSync(netnsPath(netns))) return [];
  return (await run(['ip', 'netns', 'pids', netns])).stdout.split('\n').filter(Boolean).map(Number);
}

/** The namespace (its eth0 and, with it, the veth's other end) and then the veth, if still there. */
export async function removeHostLink(run: Run, link: Pick<HostLink, 'netns' | 'veth'>): Promise<void> {
  if (fs.existsSync(netnsPath(link.netns))) await run(['ip', 'netns', 'del', link.netns]);
  // Deleting the namespace takes the pair down a moment later: a veth gone meanwhile is fine.
  if (linkExists(link.veth)) await run(['ip', 'link', 'del', link.veth], { okExitCodes: [1] });
}

export async function removeBridge(run: Run, bridge: string): Promise<void> {
  if (linkExists(bridge)) await run(['ip', 'link', 'del', bridge]);
}
