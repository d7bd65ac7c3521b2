/**
 * Registered on every host queue: lets the CLI and workflows ask whether a host's worker is there
 * and what it runs, before they send it real work.
 */
import os from 'node:os';
import type { BuildPlatform } from '../common/arch.js';
import type { Role } from '../common/queues.js';
import type { Config } from '../lib/config.js';
import type { Run } from './runner.js';

export interface HostFacts {
  host: string;
  role: Role;
  arch: string;
  kernel: string;
  pid: number;
  uptimeSeconds: number;
  /** First line of `qemu-img --version`: every role that touches images needs it. */
  qemuImg: string;
  /** A builder's: how it builds for its architecture (native or emulated). */
  build?: BuildPlatform;
}

export function createHostActivities({
  role,
  config,
  arch,
  run,
}: {
  role: Role;
  config: Config;
  arch: string;
  run: Run;
}) {
  return {
    async hostFacts(): Promise<HostFacts> {
      const qemuImg = (await run(['qemu-img', '--version'])).stdout.split('\n')[0]!.trim();
      return {
        host: config.host,
        role,
        arch,
        kernel: os.release(),
        pid: process.pid,
        uptimeSeconds: Math.round(process.uptime()),
        qemuImg,
      };
    },
  };
}

export type HostActivities = ReturnType<typeof createHostActivities>;
