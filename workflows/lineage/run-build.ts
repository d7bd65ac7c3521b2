/** A lineage's builds, one at a time: each runs as a child workflow and registers the version it made. */
import { executeChild, patched } from '@temporalio/workflow';
import { SA } from '../../common/search-attributes.js';
import { buildWorkflow } from '../build/workflow.js';
import { failureMessage } from '../support/failures.js';
import { buildContext, type Lineage } from './lineage.js';
import type { QueuedBuild } from './messages.js';

/** Runs the build and registers its version; a failed build is recorded, never thrown. */
export async function runBuild(lineage: Lineage, queued: QueuedBuild): Promise<void> {
  const version = lineage.nextVersionId();
  const context = buildContext(queued.id, queued.request);
  const { by, recipe } = queued.request;
  // The entry takes a sequence number, which later build ids share: lineages from before it record none.
  if (patched('build-started-entry'))
    lineage.record(
      by,
      'build-started',
      `${queued.id}: ${version} for ${recipe.arch}`,
      new Date().toISOString(),
      context,
    );
  try {
    const result = await executeChild(buildWorkflow, {
      workflowId: queued.id,
      args: [{ ...queued.request, version }],
      typedSearchAttributes: [
        { key: SA.kind, value: 'build' },
        { key: SA.image, value: lineage.state.image },
        { key: SA.version, value: version },
        { key: SA.arch, value: queued.request.recipe.arch },
      ],
      staticSummary: `Build ${lineage.state.image}:${version} (${queued.request.recipe.arch}) for ${queued.request.by}: ${queued.request.message}`,
    });
    lineage.register(result.record, new Date().toISOString(), context);
  } catch (err) {
    lineage.record(by, 'build-failed', `${queued.id}: ${failureMessage(err)}`, new Date().toISOString(), context);
  }
}
