/**
 * The rows of the Rocks bridge's `zvol_list` in every phase, as `rocks list host storagemap` reads
 * them: its state column comes from `remotehost`, `is_sending` (== 1, == 0) and
 * `is_delete_remote` (== 0), so "nothing syncs" must be null, never false.
 */
import { describe, expect, it } from 'vitest';
import { zvolRow } from '../../starters/bridges/rocks-amqp.js';
import type { VolumePhase, VolumeView } from '../../workflows/volume/messages.js';

/** The state column as the Rocks command computes it from a row. */
function rocksState(row: Record<string, unknown>): string {
  if (row.remotehost === null) return 'unmapped';
  // Python's `==` between a bool or None and 1/0, as the Rocks command compares.
  const eq = (v: unknown, n: number) => v !== null && Number(v) === n;
  if (eq(row.is_sending, 1)) return 'NAS->VM';
  if (eq(row.is_sending, 0)) return eq(row.is_delete_remote, 0) ? 'NAS<-VM sched' : 'NAS<-VM';
  return 'mapped';
}

function view(phase: VolumePhase, sync: boolean): VolumeView {
  return {
    volume: 'vm-1',
    phase,
    since: '2026-01-01T00:00:00.000Z',
    nas: 'nas-0-0',
    computeHost: 'compute-0-0',
    storage: { kind: 'zfs', devicePath: '/dev/zvol/tank/imgflow/vm-1', root: 'tank/imgflow' },
    pools: { zpool: 'tank' },
    ...(sync ? { sync: { frequencySeconds: 300, nodeRoot: 'local/imgflow', failures: 0, frozen: false } } : {}),
    speeds: {},
    waitSeconds: 60,
    history: [],
    locked: false,
  };
}

describe('zvol_list rows as Rocks reads them', () => {
  it('shows each phase as the NAS daemon showed its states', () => {
    const cases: [VolumePhase, boolean, string][] = [
      ['unmapped', false, 'unmapped'],
      ['mapping', false, 'mapped'],
      ['mapped', false, 'mapped'],
      ['mapped', true, 'mapped'],
      ['syncing-to-node', true, 'NAS->VM'],
      ['syncing-to-nas', true, 'NAS<-VM sched'],
      ['unmapping', true, 'NAS<-VM'],
      ['unmapping', false, 'mapped'],
      ['deleted', false, 'unmapped'],
    ];
    expect(cases.map(([phase, sync]) => rocksState(zvolRow(view(phase, sync))))).toEqual(
      cases.map(([, , state]) => state),
    );
  });

  it('gives null, not false, for the sync fields when nothing syncs, and the pool that was asked for', () => {
    const row = zvolRow(view('mapped', false));
    expect(row).toMatchObject({ zpool: 'tank', is_sending: null, is_delete_remote: null, remotehost: 'compute-0-0' });
    expect(zvolRow({ ...view('mapped', true), pools: undefined })).toMatchObject({
      zpool: 'tank/imgflow',
      remotepool: 'local/imgflow',
    });
  });

  it('keeps a volume in error on its host and says why', () => {
    expect(zvolRow({ ...view('error', false), reason: 'unmap failed: no worker took the step' })).toMatchObject({
      remotehost: 'compute-0-0',
      state: 'error',
      error: 'unmap failed: no worker took the step',
    });
  });
});
