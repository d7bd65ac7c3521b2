/**
 * The build report: one row per phase with what the image held after it. Changes are the
 * difference between consecutive measurements and the TOTAL row is the last measurement, so
 * nothing is summed except time.
 */

export interface ReportRow {
  phase: string;
  durationMs: number;
  /** Installed packages measured after the phase. */
  packages: number;
  /** Disk usage measured after the phase. */
  bytes: number;
  /** Why a phase did less than usual, e.g. a cache hit. */
  note?: string;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number): string {
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
  return bytes < 0 ? `-${text}` : text;
}

const signed = (n: number, text: string) => (n > 0 ? `+${text}` : n === 0 ? '0' : text);

export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')}s`;
}

const HEADER = ['PHASE', 'TIME', '+/- PACKAGES', '+/- SIZE', 'PACKAGES', 'SIZE', 'NOTE'];
const RIGHT_ALIGNED = new Set([1, 2, 3, 4, 5]);

function cells(
  phase: string,
  ms: number,
  from: { packages: number; bytes: number },
  to: ReportRow | { packages: number; bytes: number },
  note = '',
): string[] {
  const dp = to.packages - from.packages;
  const db = to.bytes - from.bytes;
  return [
    phase,
    formatDuration(ms),
    signed(dp, String(dp)),
    signed(db, formatBytes(db)),
    String(to.packages),
    formatBytes(to.bytes),
    note,
  ];
}

/** A fixed-width table, header first, then the phases, then TOTAL. */
export function formatReport(rows: ReportRow[]): string {
  const empty = { packages: 0, bytes: 0 };
  const table = [HEADER];
  rows.forEach((row, i) => table.push(cells(row.phase, row.durationMs, rows[i - 1] ?? empty, row, row.note)));
  const last = rows.at(-1) ?? empty;
  table.push(
    cells(
      'TOTAL',
      rows.reduce((ms, row) => ms + row.durationMs, 0),
      empty,
      last,
    ),
  );
  const widths = HEADER.map((_, col) => Math.max(...table.map((line) => line[col]!.length)));
  return table
    .map((line) =>
      line
        .map((cell, col) => (RIGHT_ALIGNED.has(col) ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
