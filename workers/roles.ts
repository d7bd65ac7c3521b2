/**
 * What each role's worker polls and runs. A role's activities come from its factory, given the
 * real drivers here; tests call the same factories or hand in their own activities.
 */
import { createBuilderActivities } from '../activities/builder/index.js';
import { createNasActivities } from '../activities/nas/index.js';
import { createNasVolumeActivities } from '../activities/nas/volumes.js';
import { createNasDiffActivities } from '../activities/nas/diff.js';
import { createNasPackActivities } from '../activities/nas/pack.js';
import { createNasRetentionActivities } from '../activities/nas/retention.js';
import { createComputeActivities } from '../activities/compute/index.js';
import { createRunner } from '../activities/runner.js';
import { createHostActivities } from '../activities/host.js';
import { checkArch, InputError } from '../common/names.js';
import { CONTROL_QUEUE, queues, ROLES, WORKFLOW_QUEUE, type Role } from '../common/queues.js';
import { paths, type Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { createCloudActivities } from '../activities/cloud/index.js';
import { cloudRegistry, trustAnchors } from '../activities/cloud/registry/configured.js';

export interface RolePlan {
  role: Role;
  taskQueue: string;
  /** Whether this worker runs workflow tasks (only the orchestrator does). */
  workflows: boolean;
  activities: Record<string, (...args: never[]) => Promise<unknown>>;
}

export function checkRole(value: unknown): Role {
  if (!ROLES.includes(value as Role)) throw new InputError('role', `one of ${ROLES.join(', ')}`, value);
  return value as Role;
}

export function planRole(role: Role, config: Config, arch: string, logger: Logger): RolePlan {
  const run = createRunner(logger.child({ role }), { groupsDir: paths(config).commands });
  const deps = { run, config };
  const host = (r: Role) => createHostActivities({ role: r, config, arch, run });
  switch (role) {
    case 'orchestrator':
      return { role, taskQueue: WORKFLOW_QUEUE, workflows: true, activities: {} };
    case 'builder':
      return { role, taskQueue: queues.builder(checkArch('arch', arch)), workflows: false, activities: { ...host(role), ...createBuilderActivities(deps) } };
    case 'nas':
      return { role, taskQueue: queues.nas(config.host), workflows: false, activities: { ...host(role), ...createNasActivities(deps), ...createNasVolumeActivities(deps), ...createNasDiffActivities(), ...createNasRetentionActivities(deps), ...createNasPackActivities(deps) } };
    case 'compute':
      return { role, taskQueue: queues.compute(config.host), workflows: false, activities: { ...host(role), ...createComputeActivities(deps) } };
    case 'cloud':
      return { role, taskQueue: queues.cloud(config.site), workflows: false, activities: { ...host(role), ...cloudActivities(run, config, logger) } };
    case 'control':
      return { role, taskQueue: CONTROL_QUEUE, workflows: false, activities: { ...host(role), ...cloudActivities(run, config, logger) } };
  }
}

/** Subscription activities: the registry and trust anchors come from this worker's configuration. */
function cloudActivities(run: ReturnType<typeof createRunner>, config: Config, logger: Logger) {
  return createCloudActivities({ run, config, registry: cloudRegistry(config, process.env, logger), trust: trustAnchors(process.env), logger });
}
