/**
 * The CLI's way to push a version: resolve `image[:version|tag]` or `image@channel` from the
 * lineage, take the version's stored files on one NAS, and run the push workflow there.
 */
import type { Client } from '@temporalio/client';
import { checkHost, checkName, InputError } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import { formatReference, parseReference } from '../common/oci.js';
import { pushWorkflowId, type PushInput, type PushResult, type RegistryAccess } from '../workflows/push/messages.js';
import { pushWorkflow } from '../workflows/push/workflow.js';
import { describeLineage, fullVersion, resolveVersion } from './lineage-client.js';

export interface PushRequest {
  /** `image`, `image:version`, `image:tag` or `image@channel`. */
  image: string;
  /** `<registry>/<repository>[:tag]`; the tag defaults to the version's id. */
  to: string;
  signingKeyFile: string;
  nas?: string;
  access?: RegistryAccess;
  workerWaitSeconds?: number;
}

const IMAGE_REF = '<image>[:version|tag] or <image>@<channel>';

/** The version a push names, resolved from the lineage. */
async function versionOf(client: Client, ref: string): Promise<{ image: string; id: string }> {
  const m = /^([^:@]+)(?:([:@])([^:@]+))?$/.exec(ref);
  if (!m) throw new InputError('image', IMAGE_REF, ref);
  const image = checkName('image', m[1]);
  if (m[2] === '@') {
    const view = await describeLineage(client, image);
    const current = view.channels[checkName('channel', m[3])]?.current;
    if (!current)
      throw new InputError(
        'channel',
        `a channel of ${image} with an entry (${Object.keys(view.channels).join(', ') || 'none'})`,
        m[3],
      );
    return { image, id: current.version };
  }
  return { image, id: (await resolveVersion(client, image, m[3])).id };
}

export async function buildPushInput(client: Client, request: PushRequest): Promise<PushInput> {
  const target = parseReference('to', request.to);
  if (target.digest) throw new InputError('to', 'a reference without a digest (the push makes it)', request.to);
  if (!request.signingKeyFile.startsWith('/'))
    throw new InputError('key', 'an absolute path to the signing key on the NAS', request.signingKeyFile);
  const { image, id } = await versionOf(client, request.image);
  const record = await fullVersion(client, image, id);
  if (record.removed)
    throw new InputError(
      'image',
      `a version whose files are still stored (${image}:${id} was removed: ${record.removed.reason})`,
      request.image,
    );
  if (record.revoked)
    throw new InputError(
      'image',
      `a version that is not revoked (${image}:${id}: ${record.revoked.reason})`,
      request.image,
    );
  const hosts = [...new Set(record.artifacts.map((a) => a.host))];
  const host = request.nas === undefined ? hosts[0] : checkHost('nas', request.nas);
  if (!host || !hosts.includes(host))
    throw new InputError('nas', `a NAS storing ${image}:${id} (${hosts.join(', ') || 'none'})`, request.nas);
  const to = formatReference({ ...target, tag: target.tag ?? id });
  return {
    to,
    host,
    version: {
      image,
      version: id,
      arch: record.arch,
      os: record.os,
      createdAt: record.createdAt,
      by: record.by,
      message: record.message,
      recipeDigest: record.recipeDigest,
      provenance: record.provenance,
    },
    artifacts: record.artifacts
      .filter((a) => a.host === host)
      .map((a) => ({ format: a.format, path: a.path, sha256: a.sha256, bytes: a.bytes })),
    signingKeyFile: request.signingKeyFile,
    ...(request.access ? { access: request.access } : {}),
    ...(request.workerWaitSeconds ? { workerWaitSeconds: request.workerWaitSeconds } : {}),
  };
}

/** Pushes and signs; the same version pushed again to the same place reuses the workflow id's last result. */
export async function pushVersion(client: Client, request: PushRequest): Promise<PushResult> {
  const input = await buildPushInput(client, request);
  return client.workflow.execute(pushWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: pushWorkflowId(input.version.image, input.version.version, input.to),
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    args: [input],
    typedSearchAttributes: [
      { key: SA.kind, value: 'push' },
      { key: SA.image, value: input.version.image },
      { key: SA.version, value: input.version.version },
      { key: SA.arch, value: input.version.arch },
    ],
    staticSummary: `Push ${input.version.image}:${input.version.version} to ${input.to}, signed`,
  });
}
