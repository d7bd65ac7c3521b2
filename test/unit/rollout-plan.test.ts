/** A rollout's waves: the percentages as given and checked, the members split by them, and the order a rollback takes. */
import { describe, expect, it } from 'vitest';
import { checkRolloutRequest, parseWaves, rolloutWorkflowId, type Member } from '../../common/rollout.js';
import { InputError } from '../../common/names.js';
import { planWaves, returnOrder } from '../../workflows/rollout/plan.js';

const pack = (name: string): Member => ({
  kind: 'pack',
  name,
  host: 'nas1',
  packKind: 'vm',
  from: { tag: 'gold', version: 'v1' },
  to: { tag: 'next', version: 'v2' },
});
const base = (version: string) => ({
  image: 'web',
  version,
  artifact: { format: 'qcow2', host: 'nas1', path: `/srv/store/web-${version}.qcow2` },
  channel: 'prod',
});
const volume = (name: string): Member => ({ kind: 'volume', name, host: 'nas1', from: base('v1'), to: base('v2') });
const names = (waves: Member[][]) => waves.map((w) => w.map((m) => m.name));

describe('rollout waves', () => {
  it('parses cumulative percentages and refuses what is not a plan, naming the field', () => {
    expect(parseWaves('--waves', '10%,50%,100%')).toEqual([10, 50, 100]);
    expect(parseWaves('--waves', '25, 100')).toEqual([25, 100]);
    expect(parseWaves('--waves', '100%')).toEqual([100]);
    const refused = (text: unknown) => {
      try {
        parseWaves('--waves', text);
      } catch (err) {
        expect(err).toBeInstanceOf(InputError);
        return (err as Error).message;
      }
      throw new Error(`${String(text)} was taken`);
    };
    expect(refused('50%,10%,100%')).toMatch(/^--waves: expected increasing percentages \(wave 2 is not above wave 1\)/);
    expect(refused('10%,50%')).toMatch(/^--waves: expected a last wave of 100%/);
    expect(refused('0%,100%')).toMatch(/^--waves: expected each wave a whole percentage from 1% to 100% \(wave 1\)/);
    expect(refused('10%,150%')).toMatch(/^--waves: expected each wave a whole percentage/);
    expect(refused('ten,100%')).toMatch(/^--waves: expected percentages such as 10%,50%,100%/);
    expect(refused('1,2,3,4,5,6,7,8,9,10,100')).toMatch(/^--waves: expected 1 to 10 waves/);
    expect(refused('1%,'.repeat(30) + '100%')).toMatch(
      /^--waves: expected a list such as 10%,50%,100% \(at most 64 characters\)/,
    );
    expect(refused(undefined)).toMatch(/^--waves: expected a list/);
  });

  it('splits members by the percentages: the first wave gets at least one, the last the rest, packs before volumes', () => {
    const members = [volume('vol-b'), pack('web'), volume('vol-a'), pack('compute'), volume('vol-c')];
    expect(names(planWaves(members, [10, 50, 100]))).toEqual([['compute'], ['web', 'vol-a'], ['vol-b', 'vol-c']]);
    expect(names(planWaves(members, [100]))).toEqual([['compute', 'web', 'vol-a', 'vol-b', 'vol-c']]);
    // Few members and close percentages: a wave may be empty, none is lost or moved twice.
    expect(names(planWaves([pack('a'), pack('b')], [10, 20, 100]))).toEqual([['a'], [], ['b']]);
    expect(names(planWaves([], [10, 50, 100]))).toEqual([[], [], []]);
    const many = Array.from({ length: 200 }, (_, i) => volume(`v${String(i).padStart(3, '0')}`));
    const waves = planWaves(many, [10, 50, 100]);
    expect(waves.map((w) => w.length)).toEqual([20, 80, 100]);
    expect(new Set(waves.flat().map((m) => m.name)).size).toBe(200);
  });

  it('takes moves back newest first, and only those that were made', () => {
    const moved = [{ name: 'a', movedAt: 1 }, { name: 'b' }, { name: 'c', movedAt: 3 }, { name: 'd', movedAt: 2 }];
    expect(returnOrder(moved).map((m) => m.name)).toEqual(['c', 'd', 'a']);
  });

  it('checks a whole request and names the member at fault', () => {
    const request = {
      by: 'alice',
      image: 'web',
      channel: 'prod',
      tag: 'next',
      version: 'v2',
      waves: [50, 100],
      between: { kind: 'pause' as const, seconds: 5 },
      members: [pack('web'), volume('vol-a')],
    };
    expect(checkRolloutRequest(request)).toBe(request);
    expect(() => checkRolloutRequest({ ...request, members: [pack('web'), pack('web')] })).toThrow(
      /^members\[1\]: expected each pack once/,
    );
    expect(() =>
      checkRolloutRequest({ ...request, members: [{ ...volume('vol-a'), to: base('v3') } as Member] }),
    ).toThrow(/^members\[0\]\.to\.version: expected v2/);
    expect(() => checkRolloutRequest({ ...request, between: { kind: 'pause', seconds: 0 } })).toThrow(/^pause: /);
    expect(() => checkRolloutRequest({ ...request, channel: 'Prod' })).toThrow(/^channel: /);
    // One id per image and channel, and no two pairs share one.
    expect(rolloutWorkflowId('a-b', 'c')).not.toBe(rolloutWorkflowId('a', 'b-c'));
  });
});
