/**
 * A revocation decided by the lineage's rules: each channel whose current entry is the version
 * rolls back to its previous usable entry (revoked and removed ones skipped), one with none is
 * left as it is, --keep-channels leaves them all; a second revocation changes nothing; a copy is
 * marked once, and only a copy of the version named.
 */
import { describe, expect, it } from 'vitest';
import { Lineage, newLineageState } from '../../workflows/lineage/lineage.js';
import {
  checkAncestorRevoked,
  markAncestorRevoked,
  planRevocation,
  revokeVersion,
} from '../../workflows/lineage/revocation.js';
import { newVersion } from '../support/versions.js';

const AT = '2026-01-01T00:00:00.000Z';

/** v1..v4 tagged t1..t4; t1, t2, t3 promoted to test in turn, t3 alone to edge. */
function lineage(): Lineage {
  const l = new Lineage(newLineageState('img'));
  for (const n of [1, 2, 3, 4]) {
    l.register(newVersion(n), AT);
    l.tag({ by: 'alice', version: `v${n}`, name: `t${n}` }, AT);
  }
  for (const tag of ['t1', 't2', 't3']) l.promote({ by: 'alice', tag, channel: 'test' }, AT);
  l.promote({ by: 'alice', tag: 't3', channel: 'edge' }, AT);
  return l;
}

describe('revocation', () => {
  it('rolls each channel back to its previous usable entry in the same step, and leaves one with none', () => {
    const l = lineage();
    revokeVersion(l, { by: 'alice', version: 'v2', reason: 'old' }, AT);
    const plan = planRevocation(l, { version: 'v3' });
    expect(plan).toMatchObject({
      channels: [
        { channel: 'test', tag: 't3', action: 'rollback', to: { version: 'v1', tag: 't1' } },
        { channel: 'edge', tag: 't3', action: 'none-usable' },
      ],
      tags: ['t3'],
    });
    expect(l.state.channels.test).toHaveLength(3);
    const done = revokeVersion(l, { by: 'bob', version: 'v3', reason: 'CVE' }, AT);
    expect(done).toMatchObject({ changed: true, revoked: { by: 'bob', reason: 'CVE' }, channels: plan.channels });
    expect(l.state.channels.test!.at(-1)).toMatchObject({ version: 'v1', action: 'rollback', reason: 'revoked: CVE' });
    expect(l.state.channels.edge!.at(-1)).toMatchObject({ version: 'v3', action: 'promote' });
    expect(l.state.history.slice(-2).map((e) => `${e.op} ${e.detail}`)).toEqual([
      'revoke v3: CVE',
      'rollback test -> t1 (v1): revoked: CVE',
    ]);

    const entries = l.state.history.length;
    const again = revokeVersion(l, { by: 'carol', version: 'v3', reason: 'again' }, AT);
    expect(again).toMatchObject({ changed: false, revoked: { by: 'bob', reason: 'CVE' } });
    expect(again.channels).toEqual([{ channel: 'edge', tag: 't3', action: 'keep' }]);
    expect(l.state.history.length).toBe(entries);
  });

  it('keeps channels when told to', () => {
    const l = lineage();
    const done = revokeVersion(l, { by: 'alice', version: 'v3', reason: 'CVE', keepChannels: true }, AT);
    expect(done.channels.map((c) => c.action)).toEqual(['keep', 'keep']);
    expect(l.state.channels.test!.at(-1)!.version).toBe('v3');
  });

  it('marks a copy once, and only a copy of the version named', () => {
    const copy = new Lineage(newLineageState('img2'));
    copy.register({ ...newVersion(1), origin: { image: 'img', version: 'v3' } }, AT);
    const ancestor = { image: 'img', version: 'v3', reason: 'CVE', by: 'bob', at: AT };
    expect(() =>
      checkAncestorRevoked(copy, { by: 'bob', version: 'v1', ancestor: { ...ancestor, version: 'v2' } }),
    ).toThrow('version: expected a copy of img:v2 (img2:v1 is a copy of img:v3), got "v1"');
    expect(() =>
      checkAncestorRevoked(copy, { by: 'bob', version: 'v1', ancestor: { ...ancestor, at: 'soon' } }),
    ).toThrow(/^ancestor\.at: expected an ISO time/);
    checkAncestorRevoked(copy, { by: 'bob', version: 'v1', ancestor });
    expect(markAncestorRevoked(copy, { by: 'bob', version: 'v1', ancestor }, AT)).toMatchObject({ changed: true });
    const other = { ...ancestor, reason: 'later' };
    expect(markAncestorRevoked(copy, { by: 'bob', version: 'v1', ancestor: other }, AT)).toMatchObject({
      changed: false,
      ancestorRevoked: { reason: 'CVE' },
    });
    expect(copy.state.history.filter((e) => e.op === 'ancestor-revoked')).toHaveLength(1);
  });
});
