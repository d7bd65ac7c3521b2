/**
 * CPU time by process, read from /proc/<pid>/stat: a process's own user and system time, and
 * that of its children it has waited for (a worker's commands: qemu-img, zfs, tgtadm, ...).
 * A process gone since the last sample counts nothing further.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface Cpu {
  /** Seconds of the processes themselves. */
  own: number;
  /** Seconds of their ended children (a worker's commands). */
  children: number;
}

export function cpuOf(pid: number): Cpu {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const at = (field: number) => Number(f[field - 3]) / CLOCK_TICKS;
    return { own: at(14) + at(15), children: at(16) + at(17) };
  } catch {
    return { own: 0, children: 0 };
  }
}

export type CpuSample = Map<string, Cpu>;

/** The CPU of each named group of processes now. */
export function sampleCpu(groups: readonly { name: string; pids: readonly number[] }[]): CpuSample {
  return new Map(
    groups.map(({ name, pids }) => [
      name,
      pids.map(cpuOf).reduce((a, b) => ({ own: a.own + b.own, children: a.children + b.children }), {
        own: 0,
        children: 0,
      }),
    ]),
  );
}

/** What each group used between two samples; a group whose processes ended shows no negative time. */
export function cpuBetween(before: CpuSample, after: CpuSample): CpuSample {
  return new Map(
    [...after].map(([name, a]) => {
      const b = before.get(name) ?? { own: 0, children: 0 };
      return [name, { own: Math.max(0, a.own - b.own), children: Math.max(0, a.children - b.children) }];
    }),
  );
}

/** This process's own CPU (the bench's client side), in seconds. */
export function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The machine's zfs-fuse daemon: one per machine, shared with whatever else uses ZFS here. */
export function zfsFusePids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'zfs-fuse';
      } catch {
        return false;
      }
    })
    .map(Number);
}
