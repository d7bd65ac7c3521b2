/**
 * What every role's activities share about running as an activity: the dependencies each factory
 * takes, and heartbeats for work that waits outside a command (the runner beats inside one). Both
 * also work outside an activity (tests, the demo's in-process workers), where they do nothing.
 */
import type { Config } from '../../lib/config.js';
import { currentActivity, type Run } from '../runner.js';

export { currentActivity };

/** What every role's factory is handed by its worker: the command runner and the worker's configuration. */
export interface ActivityDeps {
  run: Run;
  config: Config;
}

/** Tells Temporal the activity is alive while it waits or walks outside a command; a no-op outside an activity. */
export function heartbeat(details: unknown): void {
  currentActivity()?.heartbeat(details);
}
