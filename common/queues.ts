/**
 * Task queues. Workflows run on one shared queue; every activity runs on the queue of the host
 * that owns the resource it touches, so privileged commands never leave that host.
 */
import { checkArch, checkHost } from './names.js';

export const WORKFLOW_QUEUE = 'imgflow';
export const CONTROL_QUEUE = 'control';

export const ROLES = ['orchestrator', 'builder', 'nas', 'compute', 'cloud', 'control'] as const;
export type Role = (typeof ROLES)[number];

export const queues = {
  builder: (arch: string) => `builder.${checkArch('arch', arch)}`,
  nas: (host: string) => `nas.${checkHost('nas', host)}`,
  compute: (host: string) => `compute.${checkHost('compute host', host)}`,
  cloud: (site: string) => `cloud.${checkHost('site', site)}`,
};
