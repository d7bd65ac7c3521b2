/**
 * Registered on every host queue: lets the CLI and workflows ask whether a host's worker is there
 * and what it is, before they send it real work.
 */
import os from 'node:os';
import type { Role } from '../common/queues.js';
import type { Config } from '../lib/config.js';

export interface HostFacts {
  host: string;
  role: Role;
  arch: string;
  kernel: string;
  pid: number;
  uptimeSeconds: number;
}

export function createHostActivities({ role, config, arch }: { role: Role; config: Config; arch: string }) {
  return {
    async hostFacts(): Promise<HostFacts> {
      return { host: config.host, role, arch, kernel: os.release(), pid: process.pid, uptimeSeconds: Math.round(process.uptime()) };
    },
  };
}

export type HostActivities = ReturnType<typeof createHostActivities>;
