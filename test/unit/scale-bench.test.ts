/**
 * What the scale bench stands on: a worker's role settings read from one host's own environment
 * (several hosts' workers in one process), and CPU time read from /proc for a process and for the
 * children it has waited for.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { planRole } from '../../workers/roles.js';
import { cpuBetween, cpuOf, sampleCpu } from '../../bench/scale/cpu.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';

describe('a role planned from a host environment of its own', () => {
  const config = loadConfig({ home: tempDir('imgflow-scale-roles-'), host: 'nas-7', metricsAddress: '' }, {});
  const { logger } = memoryLogger();

  it('reads its settings there, not from the process environment', () => {
    expect(() => planRole('nas', config, 'x86_64', logger, { IMGFLOW_NAS_EXPORT: 'iscsi' })).toThrow(
      /IMGFLOW_NAS_EXPORT/,
    );
    const plan = planRole('nas', config, 'x86_64', logger, { IMGFLOW_NAS_EXPORT: 'none' });
    expect(plan.taskQueue).toBe('nas.nas-7');
    expect(Object.keys(plan.activities)).toContain('volumeClone');
  });
});

describe('CPU by process from /proc', () => {
  it("counts a process's own time and that of the children it waited for", () => {
    const before = sampleCpu([{ name: 'self', pids: [process.pid] }]);
    // Busy until this process has used 0.3 s of CPU, however loaded the machine is.
    const start = process.cpuUsage();
    while (process.cpuUsage(start).user < 300_000) Math.sqrt(Math.random());
    const child = spawnSync('sh', ['-c', 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done']);
    expect(child.status).toBe(0);
    const used = cpuBetween(before, sampleCpu([{ name: 'self', pids: [process.pid] }])).get('self')!;
    expect(used.own).toBeGreaterThanOrEqual(0.25);
    expect(used.children).toBeGreaterThan(0.05);
  });

  it('reads nothing, and never a negative time, for a process that is gone', () => {
    expect(cpuOf(2 ** 22 + 1)).toEqual({ own: 0, children: 0 });
    const gone = cpuBetween(new Map([['x', { own: 5, children: 1 }]]), new Map([['x', { own: 0, children: 0 }]]));
    expect(gone.get('x')).toEqual({ own: 0, children: 0 });
  });
});
