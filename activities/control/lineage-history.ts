/**
 * The archive of lineages, on queue `control`: before a lineage continues as new it hands its older
 * history entries to `archiveHistory` and the full records of its removed versions to
 * `archiveVersions`, so the state it carries stays small; `imgflow history` reads entries back, a
 * page at a time, through `readArchivedHistory`, and `imgflow report` a removed version through
 * `readArchivedVersion`. JSON-lines files per lineage under `<home>/catalog/lineages/<image>/`:
 * `<first run id>.jsonl` for history, `<first run id>.versions.jsonl` for versions (a lineage begun
 * again under the same image name gets files of its own). Each line carries a rising seq: a retry
 * skips what an attempt whose result was lost already wrote, and a line torn by a crash mid-append
 * is cut off before the next append.
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import type { HistoryEntry, VersionRecord } from '../../common/lineage.js';
import { checkInt, checkName, InputError } from '../../common/names.js';
import { paths, type Config } from '../../lib/config.js';

export interface ArchiveInput {
  image: string;
  /** The lineage's first run id: it names the file. */
  chain: string;
  /** The last seq the lineage already counts as archived (0 for none): the file must reach it. */
  after: number;
  /** In seq order. */
  entries: HistoryEntry[];
}

export interface ArchiveResult {
  host: string;
  path: string;
  /** Entries appended now (fewer than given when a previous attempt wrote some). */
  written: number;
}

export interface ArchiveReadInput {
  image: string;
  chain: string;
  /** How many of the file's entries to skip. */
  offset: number;
  /** Entries past this seq are not the lineage's archive yet (a later append); they are left out. */
  throughSeq: number;
  limit: number;
}

export interface VersionArchiveInput {
  image: string;
  chain: string;
  /** How many records the lineage already counts as archived: the file must hold them. */
  after: number;
  /** Full records of removed versions, none archived before as far as the lineage knows. */
  records: VersionRecord[];
}

export interface VersionArchiveResult {
  host: string;
  path: string;
  /** The records the file holds now, the lineage's count included. */
  count: number;
  /**
   * Every version whose record the file holds past `after`: those given, and any an attempt whose
   * result was lost wrote before. The lineage keeps only a stub of each.
   */
  archived: string[];
}

/** One line of a version archive. */
interface VersionLine {
  seq: number;
  record: VersionRecord;
}

/** A page stays well under Temporal's 2 MB payload limit. */
const PAGE_BYTES = 1 << 20;
const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function checkChain(value: unknown): string {
  if (typeof value !== 'string' || !RUN_ID.test(value))
    throw new InputError('chain', "the lineage's first run id", value);
  return value;
}

/**
 * The seq of the file's last complete line (0 when it has none) and its lines past `after`, oldest
 * first: those an attempt whose result was lost appended. A torn last line is cut off.
 */
async function tailOf<L extends { seq: number }>(file: string, after: number): Promise<{ last: number; tail: L[] }> {
  const handle = await fs.open(file, 'r+').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!handle) return { last: 0, tail: [] };
  try {
    let { size } = await handle.stat();
    // Read backwards, twice as much each time, until a line at or before `after` (or the start) is in view.
    for (let span = 64 * 1024; ; span *= 2) {
      const start = Math.max(0, size - span);
      const buf = Buffer.alloc(size - start);
      await handle.read(buf, 0, buf.length, start);
      const end = buf.lastIndexOf(10);
      if (end === -1 && start > 0) continue;
      if (start + end + 1 < size) {
        size = start + end + 1;
        await handle.truncate(size);
      }
      if (end === -1) return { last: 0, tail: [] };
      // The first line of a span that does not begin the file may be cut: it is not read.
      const lines = buf
        .subarray(0, end)
        .toString('utf8')
        .split('\n')
        .slice(start > 0 ? 1 : 0);
      const tail: L[] = [];
      let reached = start === 0;
      for (let i = lines.length - 1; i >= 0; i--) {
        const line = JSON.parse(lines[i]!) as L;
        if (line.seq <= after) {
          reached = true;
          break;
        }
        tail.unshift(line);
      }
      if (!reached && lines.length) continue;
      if (!lines.length && start > 0) continue;
      return { last: tail.at(-1)?.seq ?? (JSON.parse(lines.at(-1)!) as L).seq, tail };
    }
  } finally {
    await handle.close();
  }
}

/** Each line of the file in order, parsed; a line torn by a crash ends it (the next append cuts it off). Nothing for a missing file. */
async function* linesOf<L>(file: string): AsyncGenerator<{ line: L; bytes: number }> {
  const stream = createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  try {
    for await (const text of lines) {
      const line = parseLine<L>(text);
      if (!line) return;
      yield { line, bytes: text.length };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  } finally {
    lines.close();
    stream.destroy();
  }
}

export function createLineageHistoryActivities({ config }: { config: Pick<Config, 'home' | 'host'> }) {
  const root = paths(config).lineageHistory;
  const fileOf = (image: string, chain: string, suffix = '') =>
    path.join(root, checkName('image', image), `${checkChain(chain)}${suffix}.jsonl`);
  // One append at a time per file: an attempt that timed out may still be writing when its retry starts.
  const busy = new Map<string, Promise<unknown>>();
  function serialised<T>(file: string, step: () => Promise<T>): Promise<T> {
    const next = (busy.get(file) ?? Promise.resolve()).then(step, step);
    busy.set(
      file,
      next.catch(() => undefined),
    );
    return next;
  }

  /**
   * Appends what `fresh` picks, given the file's lines past `after` and its last seq, flushed to
   * disk before it returns. Appending after a gap would lose lines for good (the archive lives on
   * another control host, or was lost): refused.
   */
  function append<L extends { seq: number }>(
    what: string,
    image: string,
    file: string,
    after: number,
    fresh: (tail: L[], last: number) => L[],
  ): Promise<{ tail: L[]; written: L[] }> {
    return serialised(file, async () => {
      await fs.mkdir(path.dirname(file), { recursive: true });
      const { last, tail } = await tailOf<L>(file, after);
      if (last < after)
        throw new Error(
          `the ${what} archive ${file} on ${config.host} ends at seq ${last}, but the lineage of ${image} archived through seq ${after}`,
        );
      const written = fresh(tail, last);
      if (written.length) {
        const handle = await fs.open(file, 'a');
        try {
          await handle.writeFile(written.map((l) => `${JSON.stringify(l)}\n`).join(''));
          await handle.sync();
        } finally {
          await handle.close();
        }
      }
      return { tail, written };
    });
  }

  return {
    /** Appends the entries not yet in the lineage's file. */
    async archiveHistory(input: ArchiveInput): Promise<ArchiveResult> {
      const file = fileOf(input.image, input.chain);
      const after = checkInt('after', input.after, 0, Number.MAX_SAFE_INTEGER);
      const { written } = await append<HistoryEntry>('history', input.image, file, after, (_tail, last) =>
        input.entries.filter((e) => e.seq > last),
      );
      return { host: config.host, path: file, written: written.length };
    },

    /**
     * Appends the records whose version the file does not hold yet, numbered on from its last seq.
     * Versions are removed in any order, so a retry matches on the version id, not the seq.
     */
    async archiveVersions(input: VersionArchiveInput): Promise<VersionArchiveResult> {
      const file = fileOf(input.image, input.chain, '.versions');
      const after = checkInt('after', input.after, 0, Number.MAX_SAFE_INTEGER);
      const { tail, written } = await append<VersionLine>('version', input.image, file, after, (tail, last) => {
        const held = new Set(tail.map((l) => l.record.id));
        return input.records.filter((r) => !held.has(r.id)).map((record, i) => ({ seq: last + 1 + i, record }));
      });
      const lines = [...tail, ...written];
      return {
        host: config.host,
        path: file,
        count: lines.at(-1)?.seq ?? after,
        archived: lines.map((l) => l.record.id),
      };
    },

    /** Up to `limit` archived entries after the first `offset`, in seq order; [] when there is no archive. */
    async readArchivedHistory(input: ArchiveReadInput): Promise<HistoryEntry[]> {
      const file = fileOf(input.image, input.chain);
      const offset = checkInt('offset', input.offset, 0, Number.MAX_SAFE_INTEGER);
      const limit = checkInt('limit', input.limit, 1, 100_000);
      const throughSeq = checkInt('throughSeq', input.throughSeq, 0, Number.MAX_SAFE_INTEGER);
      const entries: HistoryEntry[] = [];
      let index = 0;
      let bytes = 0;
      for await (const { line, bytes: size } of linesOf<HistoryEntry>(file)) {
        if (index++ < offset) continue;
        if (entries.length >= limit || (entries.length && bytes + size > PAGE_BYTES) || line.seq > throughSeq) break;
        entries.push(line);
        bytes += size;
      }
      return entries;
    },

    /** The archived full record of a removed version; undefined when the archive does not hold it. */
    async readArchivedVersion(input: {
      image: string;
      chain: string;
      version: string;
    }): Promise<VersionRecord | undefined> {
      const file = fileOf(input.image, input.chain, '.versions');
      const version = checkName('version', input.version);
      for await (const { line } of linesOf<VersionLine>(file)) if (line.record.id === version) return line.record;
      return undefined;
    },
  };
}

/** A line, or undefined for a line torn by a crash (the next append cuts it off). */
function parseLine<L>(text: string): L | undefined {
  try {
    return JSON.parse(text) as L;
  } catch {
    return undefined;
  }
}

export type LineageHistoryActivities = ReturnType<typeof createLineageHistoryActivities>;
