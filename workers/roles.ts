/**
 * What each role's worker polls and runs. A role's activities come from its factory, given the
 * real drivers here and the role's settings, read from this process's environment by lib/config.ts
 * when the worker starts; tests call the same factories or hand in their own activities.
 */
import { withBuildPlatform } from '../activities/builder/arch.js';
import { createBuilderActivities } from '../activities/builder/index.js';
import { createCloudActivities } from '../activities/cloud/index.js';
import { cloudRegistry } from '../activities/cloud/registry/configured.js';
import { createComputeActivities } from '../activities/compute/index.js';
import { createLineageHistoryActivities } from '../activities/control/lineage-history.js';
import { createRolloutActivities } from '../activities/control/rollout.js';
import { createNotifyActivities } from '../activities/control/notify.js';
import { createHostActivities } from '../activities/host.js';
import { createNasDiffActivities } from '../activities/nas/diff.js';
import { createNasActivities } from '../activities/nas/index.js';
import { createNasPackActivities } from '../activities/nas/pack.js';
import { createNasRetentionActivities } from '../activities/nas/retention.js';
import { createNasVolumeActivities } from '../activities/nas/volumes.js';
import { createOciPushActivities } from '../activities/oci/index.js';
import { createRunner } from '../activities/runner.js';
import { checkArch, InputError } from '../common/names.js';
import { CONTROL_QUEUE, queues, ROLES, WORKFLOW_QUEUE, type Role } from '../common/queues.js';
import {
  builderSettings,
  cloudSettings,
  computeSettings,
  nasSettings,
  notifySettings,
  paths,
  type Config,
} from '../lib/config.js';
import type { Logger } from '../lib/logger.js';

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

type Activities = RolePlan['activities'];

/** An activity worker's plan: its queue and the activities of every factory given, merged. */
function activityRole(role: Role, taskQueue: string, ...sets: Activities[]): RolePlan {
  return { role, taskQueue, workflows: false, activities: Object.assign({}, ...sets) as Activities };
}

/**
 * `env` is where the role's settings are read: this process's environment when absent, or one host's
 * own when a process holds the workers of several hosts (the scale bench).
 */
export function planRole(role: Role, config: Config, arch: string, logger: Logger, env?: NodeJS.ProcessEnv): RolePlan {
  const run = createRunner(logger.child({ role }), { groupsDir: paths(config).commands });
  const deps = { run, config };
  const host = createHostActivities({ role, config, arch, run });
  switch (role) {
    case 'orchestrator':
      return { role, taskQueue: WORKFLOW_QUEUE, workflows: true, activities: {} };
    case 'builder':
      return activityRole(
        role,
        queues.builder(checkArch('arch', arch)),
        withBuildPlatform(host, checkArch('arch', arch), { run }),
        createBuilderActivities({ ...deps, settings: builderSettings(env) }),
      );
    case 'nas': {
      const nas = { ...deps, settings: nasSettings(env) };
      return activityRole(
        role,
        queues.nas(config.host),
        host,
        createNasActivities(nas),
        createNasVolumeActivities(nas),
        createNasDiffActivities(),
        createNasRetentionActivities(nas),
        createNasPackActivities(nas),
        createOciPushActivities({ config, logger }),
      );
    }
    case 'compute':
      return activityRole(
        role,
        queues.compute(config.host),
        host,
        createComputeActivities({ ...deps, settings: computeSettings(env) }),
      );
    case 'cloud':
      return activityRole(role, queues.cloud(config.site), host, cloudActivities(run, config, logger, env));
    case 'control':
      return activityRole(
        role,
        CONTROL_QUEUE,
        host,
        cloudActivities(run, config, logger, env),
        createLineageHistoryActivities({ config }),
        createRolloutActivities(),
        createNotifyActivities({ settings: notifySettings(env) }),
      );
  }
}

/** Subscription activities: the registry and trust anchors come from this worker's settings. */
function cloudActivities(
  run: ReturnType<typeof createRunner>,
  config: Config,
  logger: Logger,
  env: NodeJS.ProcessEnv | undefined,
) {
  const settings = cloudSettings(env);
  return createCloudActivities({
    run,
    config,
    registry: cloudRegistry(config, settings.registry, logger),
    trust: { caDir: settings.caDir },
    logger,
  });
}
