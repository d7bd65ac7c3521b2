/** Telling a dead writer's partial files from a live one's, pid reuse included. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { partialOwner } from '../../lib/files.js';
import { processStartedAt, writerGone } from '../../lib/processes.js';
import { killGroup } from '../support/processes.js';

describe('partial files and their writers', () => {
  it('reads the owner pid from partial names, suffixes included', () => {
    expect(partialOwner('.v1.qcow2.partial.4242')).toBe(4242);
    expect(partialOwner('.root.partial.17')).toBe(17);
    expect(partialOwner('.key.tar.partial.17.0a1b2c3d')).toBe(17);
    expect(partialOwner('.pack.partial.17.AbC123')).toBe(17);
    expect(partialOwner('v1.qcow2')).toBeUndefined();
    expect(partialOwner('.v1.qcow2.partial.')).toBeUndefined();
    expect(partialOwner('notes.partial.12')).toBeUndefined();
  });

  it('knows when a process started', () => {
    const started = processStartedAt(process.pid)!;
    expect(started).toBeLessThanOrEqual(Date.now() + 2000);
    expect(started).toBeGreaterThan(Date.now() - 60 * 60_000);
    expect(processStartedAt(2 ** 22 + 1)).toBeUndefined();
  });

  it('a writer is gone when no process has its pid, or the one that has it started after the last change', async () => {
    const child = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => child.once('spawn', resolve));
      const pid = child.pid!;
      // A file changed an hour before this process started cannot be its own: the pid was reused.
      expect(writerGone(pid, Date.now() - 60 * 60_000)).toBe(true);
      // One changed since it started may be.
      expect(writerGone(pid, Date.now())).toBe(false);
      expect(writerGone(process.pid, 0)).toBe(false);
    } finally {
      killGroup(child.pid);
    }
    await new Promise((resolve) => child.once('exit', resolve));
    expect(writerGone(child.pid!, Date.now())).toBe(true);
  });
});
