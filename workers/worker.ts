/**
 * Builds the Worker for one role on one host. Workflow code is bundled once per process and
 * shared by every orchestrator worker in it.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  bundleWorkflowCode,
  type NativeConnection,
  Worker,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { imgflowDataConverter } from '../lib/codec.js';
import { paths, type Config } from '../lib/config.js';
import { removeLeftovers } from '../activities/leftovers.js';
import { createRunner, reapOrphans } from '../activities/runner.js';
import type { Logger } from '../lib/logger.js';
import { builderPlatform } from '../activities/builder/arch.js';
import { checkArch } from '../common/names.js';
import { planRole, type RolePlan } from './roles.js';
import type { Role } from '../common/queues.js';

/** The workflows' entry beside this module: compiled JavaScript, or the TypeScript sources under tsx and vitest. */
export const workflowsPath = ['index.js', 'index.ts']
  .map((file) => fileURLToPath(new URL(`../workflows/${file}`, import.meta.url)))
  .find((file) => existsSync(file))!;

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;

/** The workflow bundle, made once per process (webpack takes seconds; workers share it). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ workflowsPath, logger: quietBundlerLogger });
  return bundle;
}

const quietBundlerLogger = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };

export interface WorkerSpec {
  role: Role;
  config: Config;
  arch: string;
  connection: NativeConnection;
  logger: Logger;
  /** Replaces the role's real activities (tests). */
  activities?: RolePlan['activities'];
  /** Replaces the role's task queue (tests keep their runs apart this way). */
  taskQueue?: string;
  /** Where the role's settings are read (default this process's environment). */
  env?: NodeJS.ProcessEnv;
}

const made = new Map<string, number>();

/**
 * `<role>@<host>:<pid>`, and `#<n>` for a later worker of the same role and host in this process:
 * a command tells a stopped worker's polls from a running one's by identity (see starters/answers.ts).
 */
function identityOf(role: string, host: string): string {
  const identity = `${role}@${host}:${process.pid}`;
  const n = (made.get(identity) ?? 0) + 1;
  made.set(identity, n);
  return n === 1 ? identity : `${identity}#${n}`;
}

export async function createWorker(spec: WorkerSpec): Promise<{ worker: Worker; plan: RolePlan }> {
  const plan = planRole(spec.role, spec.config, spec.arch, spec.logger, spec.env);
  for (const argv of reapOrphans(paths(spec.config).commands))
    spec.logger.warn({ argv }, 'ended a command left running by a worker that died');
  // Only once those commands are ended: they may be writing the partials a dead worker left.
  const left = await removeLeftovers(spec.role, spec.config, spec.arch, createRunner(spec.logger));
  for (const mount of left.unmounted) spec.logger.warn({ mount }, 'unmounted what a worker that died left mounted');
  for (const file of left.removed)
    spec.logger.warn({ path: file }, 'removed a partial file left by a worker that died');
  if (spec.role === 'builder')
    spec.logger.info(
      { build: await builderPlatform(checkArch('arch', spec.arch), { run: createRunner(spec.logger) }) },
      'builder platform',
    );
  const activities = spec.activities ?? plan.activities;
  const worker = await Worker.create({
    connection: spec.connection,
    namespace: spec.config.namespace,
    taskQueue: spec.taskQueue ?? plan.taskQueue,
    identity: identityOf(spec.role, spec.config.host),
    dataConverter: imgflowDataConverter(spec.config),
    ...(plan.workflows ? { workflowBundle: await workflowBundle() } : {}),
    ...(Object.keys(activities).length ? { activities } : {}),
    shutdownGraceTime: '30s',
  });
  return { worker, plan: { ...plan, taskQueue: spec.taskQueue ?? plan.taskQueue } };
}
