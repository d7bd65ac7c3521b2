/**
 * The client side of `validate`: checks a stored version against the preparation rules in a
 * workflow of its own, and registers a repaired copy as a new version of its image.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { PrepareOptions } from '../activities/builder/recipe.js';
import { checkText } from '../common/limits.js';
import type { VersionRecord } from '../common/lineage.js';
import { checkHost } from '../common/names.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { SA } from '../common/search-attributes.js';
import { registerVersionUpdate } from '../workflows/lineage/messages.js';
import { validateWorkflow, type ValidateResult } from '../workflows/validate.js';
import { fullVersion, lineageHandle } from './lineage-client.js';
import { watchProgress } from './output.js';

export interface ValidateRequest {
  image: string;
  /** A version id or tag; the newest version when absent. */
  ref?: string;
  prepare: PrepareOptions;
  fix: boolean;
  by: string;
  /** The message of a repaired version (default: `validate --fix of <version>`). */
  message?: string;
  /** The NAS whose image store keeps a repaired copy (default: the version's). */
  store?: string;
}

/** Validates (and with `fix`, repairs) a version; a repaired copy is registered before this returns. */
export async function validateVersion(
  client: Client,
  r: ValidateRequest,
): Promise<{ result: ValidateResult; registered?: VersionRecord }> {
  const { image, prepare, fix, by } = r;
  const version = await fullVersion(client, image, r.ref);
  const id = version.id;
  // A version whose recipe allowed password hashes is checked as its recipe asked.
  const rules = version.allowPasswordHashes ? { ...prepare, allowPasswordHashes: true } : prepare;
  const store = checkHost('--store', r.store ?? version.artifacts[0]?.host);
  const handle = await client.workflow.start(validateWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `validate-${image}-${id}-${randomUUID().slice(0, 8)}`,
    args: [
      {
        image,
        version,
        prepare: rules,
        fix,
        by,
        message: r.message === undefined ? `validate --fix of ${id}` : checkText('--message', r.message, 'message'),
        store,
      },
    ],
    typedSearchAttributes: [
      { key: SA.kind, value: 'validate' },
      { key: SA.image, value: image },
      { key: SA.version, value: id },
      { key: SA.arch, value: version.arch },
    ],
    staticSummary: `Validate ${image}:${id}${fix ? ' and fix' : ''} for ${by}`,
  });
  const result = await watchProgress(handle, handle.result(), `validate ${image}:${id}`);
  const registered = result.fixed
    ? await lineageHandle(client, image).executeUpdate(registerVersionUpdate, { args: [result.fixed.record] })
    : undefined;
  return { result, ...(registered ? { registered } : {}) };
}
