/** When an entity workflow hands its state on to a new run. */
import { workflowInfo } from '@temporalio/workflow';

/** The history is long enough to continue as new: the server suggests it, or it is past `maxEvents`. */
export function historyFull(maxEvents: number): boolean {
  const info = workflowInfo();
  return info.continueAsNewSuggested || info.historyLength > maxEvents;
}
