/**
 * The client side of builds, shared by the CLI and the demo: ask an image's lineage for a build,
 * follow it to its registered version, and show a version as people read it.
 */
import type { Client } from '@temporalio/client';
import { formatReport } from '../activities/builder/report.js';
import { describePlatform } from '../common/arch.js';
import type { VersionRecord } from '../common/lineage.js';
import { InputError } from '../common/names.js';
import { queues } from '../common/queues.js';
import { DEFAULT_CONNECT_TIMEOUT_S } from '../lib/config.js';
import type { BuildRequest, BuildResult } from '../workflows/build/messages.js';
import { requestBuildUpdate, type BuildTicket } from '../workflows/lineage/messages.js';
import { hasWorker, outcomeOf } from './answers.js';
import { say } from './context.js';
import { fullVersion, updateLineage } from './lineage-client.js';
import { humanBytes, watchProgress } from './output.js';

async function until<T>(get: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await get().catch(() => undefined);
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** A version as people read it: its build report, then where it came from and where it lives. */
export function formatVersion(v: VersionRecord): string {
  const rows = [
    ['version', `${v.id}  ${v.createdAt} by ${v.by}: ${v.message}`],
    ['source', `${v.provenance.source}${v.capturedBuilderRoot ? ' (the builder host itself: allowBuilderRoot)' : ''}`],
    ['builder', `${v.provenance.builder} (${v.provenance.workflowId})`],
    ...(v.provenance.build ? [['arch', describePlatform(v.provenance.build)]] : []),
    ...v.artifacts.map((a) => [a.format, `${a.path} on ${a.host} (${humanBytes(a.bytes)}, sha256 ${a.sha256})`]),
    ...(v.log ? [['log', v.log.path]] : []),
    ...(v.revoked ? [['REVOKED', `${v.revoked.at} by ${v.revoked.by}: ${v.revoked.reason}`]] : []),
    ...(v.ancestorRevoked
      ? [
          [
            'ANCESTOR',
            `${v.ancestorRevoked.image}:${v.ancestorRevoked.version}${v.ancestorRevoked.through?.length ? ` (through ${v.ancestorRevoked.through.join(', ')})` : ''} REVOKED ${v.ancestorRevoked.at} by ${v.ancestorRevoked.by}: ${v.ancestorRevoked.reason}`,
          ],
        ]
      : []),
  ];
  return `${formatReport(v.report)}\n\n${rows.map(([k, val]) => `${k!.padEnd(8)}  ${val}`).join('\n')}`;
}

/**
 * Asks the image's lineage for a build (starting the lineage on its first). A store no worker
 * serves would hold the image's build slot through the whole build and then fail: refused first.
 */
export async function requestBuild(client: Client, namespace: string, request: BuildRequest): Promise<BuildTicket> {
  if (!(await hasWorker(client, namespace, queues.nas(request.store)))) {
    throw new InputError(
      '--store',
      `a NAS whose worker is running (nothing polls ${queues.nas(request.store)})`,
      request.store,
    );
  }
  return updateLineage(client, request.recipe.image, requestBuildUpdate, request);
}

/** Follows a requested build to its registered version, showing progress on a terminal. */
export async function waitForBuild(
  client: Client,
  image: string,
  buildId: string,
  ahead: string[],
  lossBoundMs = DEFAULT_CONNECT_TIMEOUT_S * 1000,
): Promise<VersionRecord> {
  if (ahead.length) say(`${image} is already building: waiting for ${ahead.join(', ')} to finish first`);
  const handle = client.workflow.getHandle(buildId);
  // The lineage starts the build when its turn comes; until then it does not exist.
  await until(() => handle.describe(), 24 * 3600_000);
  // A server that goes away meanwhile is waited for: what is printed is the build's own outcome.
  const result: BuildResult = await watchProgress(
    handle,
    outcomeOf<BuildResult>(handle, lossBoundMs, `build ${buildId}`),
    `build ${image}`,
  );
  const record = await until(() => fullVersion(client, image, result.version), 30_000);
  if (!record) throw new Error(`build ${buildId} finished but ${image} did not register ${result.version}`);
  return record;
}
