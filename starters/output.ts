/**
 * How the CLI speaks: tables for people, JSON for scripts, one-line errors on stderr, and a live
 * progress line on a terminal while a workflow works.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { Payload, PayloadCodec } from '@temporalio/common';

export type Row = Record<string, unknown>;

function cell(value: unknown): string {
  if (value === undefined || value === null) return '-';
  if (value instanceof Date) return value.toISOString().replace('.000Z', 'Z');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** Columns sized to their widest cell; numbers right-aligned, as in `zfs list`. */
export function formatTable(
  rows: Row[],
  columns: string[],
  headers: string[] = columns.map((c) => c.toUpperCase()),
): string {
  const cells = rows.map((row) => columns.map((c) => cell(row[c])));
  const numeric = columns.map((_, i) => rows.length > 0 && rows.every((row) => typeof row[columns[i]!] === 'number'));
  const widths = columns.map((_, i) => Math.max(headers[i]!.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

/** Key/value pairs, one per line, keys aligned. */
export function formatPairs(pairs: [string, unknown][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`).join('\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

const WRAPPER =
  /^(workflow execution failed|activity task failed|child workflow execution failed|workflow update failed|unhandled error)/i;

/** Temporal wraps a failure in generic messages; the reason is in the innermost cause. */
function reason(err: Error): Error {
  let e = err;
  while (WRAPPER.test(e.message) && e.cause instanceof Error) e = e.cause;
  return e;
}

/** A query nobody picked up: the server's words say what happened, not what to do about it. */
function unansweredQuery(err: Error): string | undefined {
  if (!/^failed to query workflow/i.test(err.message) || !(err.cause instanceof Error)) return undefined;
  const why = err.cause.message.replace(/^\d+ [A-Z_]+: /, '');
  return /worker/.test(why) ? `${why}: is an orchestrator worker running? ('imgflow dev' runs one of each role)` : why;
}

/** gRPC's PERMISSION_DENIED and UNAUTHENTICATED: the server's authorizer refused the call. */
function refused(err: Error): string | undefined {
  for (let e: (Error & { code?: unknown }) | undefined = err; e; e = e.cause instanceof Error ? e.cause : undefined) {
    if (e.code === 7 || e.code === 16)
      return 'refused by the Temporal server: this token does not allow that here (nothing was started or changed)';
  }
  return undefined;
}

/** An error as the one line a person sees; several problems (a recipe's) are joined with "; ". */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? (refused(err) ?? unansweredQuery(err) ?? reason(err).message) : String(err);
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .join('; ');
}

interface PendingActivity {
  activityType?: { name?: string | null } | null;
  attempt?: number | null;
  lastFailure?: { message?: string | null } | null;
  heartbeatDetails?: { payloads?: Payload[] | null } | null;
}

/** The percentage an activity's command last reported in its heartbeat, if any (decoded as the client's codecs sealed it). */
async function percentOf(a: PendingActivity, codecs: PayloadCodec[]): Promise<string> {
  try {
    let payloads = a.heartbeatDetails?.payloads?.slice(0, 1) ?? [];
    for (const codec of codecs.toReversed()) payloads = await codec.decode(payloads);
    // Loaded here, not with this module: the CLI's tables and errors come without the SDK.
    const { defaultPayloadConverter } = await import('@temporalio/common');
    const details = payloads[0] ? defaultPayloadConverter.fromPayload<{ percent?: number }>(payloads[0]) : undefined;
    return typeof details?.percent === 'number' ? ` ${Math.round(details.percent)}%` : '';
  } catch {
    return '';
  }
}

/** The details a workflow last set for the Web UI (its step, in markdown), as plain text; none when nobody answers at once. */
async function currentDetails(handle: WorkflowHandle): Promise<string | undefined> {
  const metadata = await handle.client
    .withDeadline(Date.now() + 2000, () => handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata'))
    .catch(() => undefined);
  return metadata?.currentDetails?.replace(/\*\*/g, '') || undefined;
}

/**
 * What a workflow is doing now, as a progress line says it: the step it set for the Web UI and
 * its pending activities with their progress. A workflow waiting on a child (a subscription on
 * its sync) shows the child's.
 */
export async function progressStep(handle: WorkflowHandle, depth = 0): Promise<string> {
  const { raw } = await handle.describe();
  const child = raw.pendingChildren?.[0];
  if (child?.workflowId && depth < 2)
    return progressStep(handle.client.getHandle(child.workflowId, child.runId ?? undefined), depth + 1);
  const codecs = handle.client.options.loadedDataConverter.payloadCodecs;
  const pending = (raw.pendingActivities ?? []) as PendingActivity[];
  const percents = await Promise.all(pending.map((a) => percentOf(a, codecs)));
  const activities = pending
    .map(
      (a, i) =>
        `${a.activityType?.name ?? '?'}${percents[i]}${(a.attempt ?? 1) > 1 ? ` (attempt ${a.attempt}: ${a.lastFailure?.message ?? ''})` : ''}`,
    )
    .join(', ');
  return [await currentDetails(handle), activities].filter(Boolean).join(': ') || 'orchestrating';
}

/**
 * Shows which step a workflow is on, on one rewritten line of stderr, until `done` settles.
 * Silent when stderr is not a terminal, so scripts and logs see only the result.
 */
export async function watchProgress<T>(handle: WorkflowHandle, done: Promise<T>, label: string): Promise<T> {
  if (!process.stderr.isTTY) return done;
  const frames = ['|', '/', '-', '\\'];
  let tick = 0;
  let step = 'starting';
  let settled = false;
  const started = Date.now();
  const draw = () => {
    const seconds = Math.round((Date.now() - started) / 1000);
    process.stderr.write(`\r\x1b[K${frames[tick++ % frames.length]} ${label}: ${step} (${seconds}s)`);
  };
  const poll = async () => {
    while (!settled) {
      try {
        step = await progressStep(handle);
      } catch {
        /* the next poll tries again */
      }
      draw();
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const polling = poll();
  try {
    return await done;
  } finally {
    settled = true;
    await polling;
    process.stderr.write('\r\x1b[K');
  }
}
