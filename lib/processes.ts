import { readFileSync } from 'node:fs';

/** Whether a process is still there (signal 0 checks without touching it). */
export function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Clock ticks per second in /proc's times: USER_HZ, 100 on every architecture imgflow runs on. */
const USER_HZ = 100;
/** /proc/stat gives the boot time in whole seconds: start times are this uncertain. */
const START_UNCERTAINTY_MS = 2000;

/** When a process started, in ms since the epoch (from /proc), or undefined when it is gone. */
export function processStartedAt(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "pid (comm) " come the fields from the 3rd on; the start time is the 22nd.
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const boot = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
    return Number.isFinite(ticks) && Number.isFinite(boot) ? boot * 1000 + (ticks * 1000) / USER_HZ : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the process `pid` that last changed something at `changedAtMs` is certainly gone: no
 * process holds the pid, or the one holding it started after that change (the pid was reused).
 * When unsure it is not: a live process's files are never taken for a dead one's.
 */
export function writerGone(pid: number, changedAtMs: number): boolean {
  if (pid === process.pid) return false;
  if (!processRunning(pid)) return true;
  const started = processStartedAt(pid);
  return started !== undefined && started > changedAtMs + START_UNCERTAINTY_MS;
}
