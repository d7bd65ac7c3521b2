import { getExternalWorkflowHandle } from '@temporalio/workflow';
import { gcSignal, lineageWorkflowId } from './messages.js';

/** What the daily retention schedule starts: it asks the image's lineage for a gc and ends. */
export async function lineageGcWorkflow(input: { image: string; keep?: number }): Promise<void> {
  await getExternalWorkflowHandle(lineageWorkflowId(input.image)).signal(gcSignal, {
    by: 'schedule',
    ...(input.keep ? { keep: input.keep } : {}),
  });
}
