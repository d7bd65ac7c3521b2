import fs from 'node:fs';

/** Running or sleeping; a zombie (killed, not yet reaped) counts as ended. */
export function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Kills a whole process group, if it is still there. */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** Processes whose root directory is `root` or inside it (commands running in an image). */
export function processesRootedIn(root: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const own = fs.readlinkSync(`/proc/${name}/root`);
      if (own === root || own.startsWith(`${root}/`)) pids.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids;
}
