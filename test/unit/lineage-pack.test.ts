/**
 * What a pack publishes, decided by the lineage's rules before anything runs: netboot for a
 * version with a squashfs artifact, a VM base for one with only qcow2 or raw, either on request
 * for a version with both; one kind per name.
 */
import { describe, expect, it } from 'vitest';
import type { Artifact } from '../../common/lineage.js';
import { Lineage, newLineageState } from '../../workflows/lineage/lineage.js';
import { planPack, recordPack } from '../../workflows/lineage/packs.js';
import { newVersion } from '../support/versions.js';

const AT = '2026-01-01T00:00:00.000Z';
const artifact = (format: Artifact['format']): Artifact => ({
  format,
  host: 'nas1',
  path: `/store/img/v.${format}`,
  sha256: 'a'.repeat(64),
  bytes: 1000,
});

function lineageWith(...versions: Artifact['format'][][]): Lineage {
  const lineage = new Lineage(newLineageState('img'));
  versions.forEach((formats, i) => {
    const v = lineage.register({ ...newVersion(i + 1), artifacts: formats.map(artifact) }, AT);
    lineage.tag({ by: 'alice', version: v.id, name: `t${i + 1}` }, AT);
  });
  return lineage;
}

describe('pack kinds', () => {
  it('packs squashfs for netboot, qcow2 (else raw) for a VM, and either on request when a version has both', () => {
    const lineage = lineageWith(['squashfs'], ['raw'], ['qcow2', 'raw'], ['qcow2', 'squashfs']);
    const pick = (tag: string, kind?: 'netboot' | 'vm') => {
      const { kind: k, root } = planPack(lineage, {
        by: 'alice',
        tag,
        as: `${tag}-${kind ?? 'auto'}`,
        ...(kind ? { kind } : {}),
      });
      return [k, root.format];
    };
    expect([pick('t1'), pick('t2'), pick('t3'), pick('t4')]).toEqual([
      ['netboot', 'squashfs'],
      ['vm', 'raw'],
      ['vm', 'qcow2'],
      ['netboot', 'squashfs'],
    ]);
    expect(pick('t4', 'vm')).toEqual(['vm', 'qcow2']);
    expect(() => pick('t1', 'vm')).toThrow(
      'kind: expected a kind v1 can be packed as (it has squashfs: netboot needs squashfs, vm qcow2 or raw), got "vm"',
    );
    expect(() => planPack(lineage, { by: 'alice', tag: 't1', kind: 'iso' as never })).toThrow(
      'kind: expected netboot or vm, got "iso"',
    );
  });

  it('keeps one kind per name', () => {
    const lineage = lineageWith(['qcow2', 'squashfs']);
    const { version } = planPack(lineage, { by: 'alice', tag: 't1', as: 'web' });
    recordPack(
      lineage,
      { by: 'alice', tag: 't1', as: 'web' },
      'web',
      version,
      'netboot',
      { host: 'nas1', path: '/nas/boot/web', changed: true },
      AT,
    );
    expect(() => planPack(lineage, { by: 'alice', tag: 't1', as: 'web', kind: 'vm' })).toThrow(
      'as: expected a name free for a vm pack (web is a netboot pack of img), got "web"',
    );
    expect(planPack(lineage, { by: 'alice', tag: 't1', as: 'web' }).kind).toBe('netboot');
    expect(lineage.references('v1')).toEqual(['tag t1', 'pack web']);
  });
});
