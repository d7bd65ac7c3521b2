import { describe, expect, it } from 'vitest';
import { parseDpkgStatus } from '../../activities/builder/measure.js';
import { formatBytes, formatReport } from '../../activities/builder/report.js';

describe('build report', () => {
  const rows = [
    {
      phase: 'bootstrap',
      durationMs: 31_200,
      packages: 88,
      bytes: 250 * 1024 * 1024,
      note: 'bootstrap reused: same suite, variant, mirror, packages',
    },
    { phase: 'packages', durationMs: 12_000, packages: 95, bytes: 270 * 1024 * 1024 },
    { phase: 'prepare', durationMs: 100, packages: 95, bytes: 268 * 1024 * 1024 },
  ];

  it('has a header, a row per phase with changes between measurements, and a measured TOTAL', () => {
    const lines = formatReport(rows).split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^PHASE\s+TIME\s+\+\/- PACKAGES\s+\+\/- SIZE\s+PACKAGES\s+SIZE\s+NOTE$/);
    expect(lines[1]).toMatch(
      /^bootstrap\s+31\.2s\s+\+88\s+\+250\.0 MiB\s+88\s+250\.0 MiB\s+bootstrap reused: same suite, variant, mirror, packages$/,
    );
    expect(lines[2]).toMatch(/^packages\s+12\.0s\s+\+7\s+\+20\.0 MiB\s+95\s+270\.0 MiB$/);
    expect(lines[3]).toMatch(/^prepare\s+0\.1s\s+0\s+-2\.0 MiB\s+95\s+268\.0 MiB$/);
    expect(lines[4]).toMatch(/^TOTAL\s+43\.3s\s+\+95\s+\+268\.0 MiB\s+95\s+268\.0 MiB$/);
  });

  it('aligns columns', () => {
    const lines = formatReport(rows).split('\n');
    const sizeEnd = lines[0]!.indexOf('SIZE  ', lines[0]!.indexOf('PACKAGES  ') + 1) + 4;
    for (const line of lines.slice(1)) expect(line.slice(0, sizeEnd)).toMatch(/B$/);
  });

  it('formats sizes in binary units with a sign for losses', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(-3 * 1024 ** 3)).toBe('-3.0 GiB');
  });
});

describe('dpkg status', () => {
  it('lists installed packages only, with version and architecture', () => {
    const status = [
      'Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: GNU C Library\n continued line',
      'Package: removed-thing\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0',
      'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4',
      'Package: half\nStatus: install reinstreq half-installed\nArchitecture: all\nVersion: 2',
    ].join('\n\n');
    expect(parseDpkgStatus(`${status}\n`)).toEqual([
      { name: 'base-files', version: '12.4', arch: 'amd64' },
      { name: 'libc6', version: '2.36-9', arch: 'amd64' },
    ]);
  });
});
