/**
 * The lineage archives on the control host, on real files: a retry writes nothing twice, a line
 * torn by a crash mid-append is replaced, an archive that does not reach what the lineage already
 * archived is refused, and reads page through it up to the lineage's count. The version archive
 * follows the same rules, matching retries on the version id since versions are removed in any order.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLineageHistoryActivities } from '../../activities/control/lineage-history.js';
import type { HistoryEntry, VersionRecord } from '../../common/lineage.js';
import { tempDir } from '../support/dirs.js';
import { newVersion } from '../support/versions.js';

const CHAIN = '0f8e2a64-1b2c-4d3e-9f00-123456789abc';
const entry = (seq: number): HistoryEntry => ({
  seq,
  at: '2026-01-01T00:00:00.000Z',
  by: 'alice',
  op: 'tag',
  detail: `t${seq} -> v1`,
});
const entries = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => entry(from + i));

describe('lineage history archive', () => {
  const home = tempDir();
  const archive = createLineageHistoryActivities({ config: { home, host: 'control1' } });
  const file = path.join(home, 'catalog', 'lineages', 'img', `${CHAIN}.jsonl`);
  const onDisk = () =>
    fs
      .readFileSync(file, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as HistoryEntry).seq);

  it('appends in seq order, skips what a previous attempt wrote, and replaces a torn last line', async () => {
    expect(await archive.archiveHistory({ image: 'img', chain: CHAIN, after: 0, entries: entries(1, 3) })).toEqual({
      host: 'control1',
      path: file,
      written: 3,
    });
    // The retry of an attempt whose completion was lost.
    expect(
      (await archive.archiveHistory({ image: 'img', chain: CHAIN, after: 0, entries: entries(1, 3) })).written,
    ).toBe(0);
    // A crash mid-append left half a line: the next append cuts it off and writes the entries again.
    fs.appendFileSync(file, `${JSON.stringify(entry(4)).slice(0, 20)}`);
    expect(
      (await archive.archiveHistory({ image: 'img', chain: CHAIN, after: 3, entries: entries(4, 6) })).written,
    ).toBe(3);
    expect(onDisk()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('refuses to append after a gap: the archive does not reach what the lineage archived', async () => {
    await expect(
      archive.archiveHistory({ image: 'img', chain: CHAIN, after: 9, entries: entries(10, 11) }),
    ).rejects.toThrow(
      `the history archive ${file} on control1 ends at seq 6, but the lineage of img archived through seq 9`,
    );
    await expect(archive.archiveHistory({ image: '../etc', chain: CHAIN, after: 0, entries: [] })).rejects.toThrow(
      /^image: expected a name/,
    );
    await expect(archive.archiveHistory({ image: 'img', chain: '../x', after: 0, entries: [] })).rejects.toThrow(
      `chain: expected the lineage's first run id, got "../x"`,
    );
    expect(onDisk()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('reads a page from an offset, never past the seq the lineage counts, and nothing from a missing archive', async () => {
    const read = (offset: number, throughSeq: number, limit: number) =>
      archive.readArchivedHistory({ image: 'img', chain: CHAIN, offset, throughSeq, limit });
    expect((await read(0, 6, 100)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await read(2, 6, 2)).map((e) => e.seq)).toEqual([3, 4]);
    expect((await read(2, 4, 100)).map((e) => e.seq)).toEqual([3, 4]);
    expect(await read(6, 6, 100)).toEqual([]);
    expect(
      await archive.readArchivedHistory({ image: 'other', chain: CHAIN, offset: 0, throughSeq: 6, limit: 10 }),
    ).toEqual([]);
  });

  describe('versions', () => {
    const versionsFile = path.join(home, 'catalog', 'lineages', 'img', `${CHAIN}.versions.jsonl`);
    const record = (n: number): VersionRecord => ({
      ...newVersion(n),
      id: `v${n}`,
      removed: { reason: 'retention', by: 'alice', at: '2026-01-02T00:00:00.000Z' },
    });
    const onDiskVersions = () =>
      fs
        .readFileSync(versionsFile, 'utf8')
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { seq: number; record: VersionRecord })
        .map((l) => [l.seq, l.record.id]);
    const put = (after: number, ...ns: number[]) =>
      archive.archiveVersions({ image: 'img', chain: CHAIN, after, records: ns.map(record) });

    it('appends full records numbered on, matches a retry on the version id, and replaces a torn last line', async () => {
      expect(await put(0, 5, 2)).toEqual({ host: 'control1', path: versionsFile, count: 2, archived: ['v5', 'v2'] });
      // An attempt whose result was lost wrote v7 and v3; the next asks again with v4 removed meanwhile, in id order.
      expect((await put(2, 7, 3)).archived).toEqual(['v7', 'v3']);
      expect(await put(2, 3, 4, 7)).toEqual({
        host: 'control1',
        path: versionsFile,
        count: 5,
        archived: ['v7', 'v3', 'v4'],
      });
      fs.appendFileSync(versionsFile, JSON.stringify({ seq: 6, record: record(9) }).slice(0, 40));
      expect(await put(5, 9)).toMatchObject({ count: 6, archived: ['v9'] });
      expect(onDiskVersions()).toEqual([
        [1, 'v5'],
        [2, 'v2'],
        [3, 'v7'],
        [4, 'v3'],
        [5, 'v4'],
        [6, 'v9'],
      ]);
    });

    it('refuses to append after a gap, and reads a record back by its version id', async () => {
      await expect(put(8, 10)).rejects.toThrow(
        `the version archive ${versionsFile} on control1 ends at seq 6, but the lineage of img archived through seq 8`,
      );
      expect(onDiskVersions()).toHaveLength(6);
      expect(await archive.readArchivedVersion({ image: 'img', chain: CHAIN, version: 'v3' })).toEqual(record(3));
      expect(await archive.readArchivedVersion({ image: 'img', chain: CHAIN, version: 'v8' })).toBeUndefined();
      expect(await archive.readArchivedVersion({ image: 'other', chain: CHAIN, version: 'v3' })).toBeUndefined();
      await expect(archive.readArchivedVersion({ image: 'img', chain: CHAIN, version: '../v3' })).rejects.toThrow(
        /^version: expected a name/,
      );
    });
  });
});
