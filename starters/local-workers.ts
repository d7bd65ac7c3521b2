/** The in-process workers that `dev`, `demo` and the benches run: one per role, on one connection. */
import { NativeConnection, type Worker } from '@temporalio/worker';
import type { Role } from '../common/queues.js';
import { machineArch, type Config } from '../lib/config.js';
import { connectionSettings } from '../lib/connection.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { installRuntime } from '../workers/runtime.js';
import { createWorker } from '../workers/worker.js';

export interface LocalWorkers {
  workers: Worker[];
  /** Drains and stops every worker, then closes their connection. */
  stop(): Promise<void>;
}

/**
 * Runs one worker per role in this process, sharing one connection and one workflow bundle, and a
 * builder worker on `builder.<arch>` for each of `builderArches` (other arches than the machine's).
 */
export async function startLocalWorkers(
  config: Config,
  roles: readonly Role[],
  logger: Logger = createLogger('imgflow'),
  builderArches: readonly string[] = [],
): Promise<LocalWorkers> {
  installRuntime(logger, process.env.IMGFLOW_METRICS ?? '');
  const connection = await NativeConnection.connect(connectionSettings(config));
  const arch = machineArch();
  const specs = [
    ...roles.map((role) => ({ role, arch })),
    ...builderArches.map((other) => ({ role: 'builder' as const, arch: other })),
  ];
  const workers = await Promise.all(
    specs.map(async (spec) => (await createWorker({ ...spec, config, connection, logger })).worker),
  );
  const running = workers.map((w) => w.run());
  return {
    workers,
    async stop() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(running);
      await connection.close();
    },
  };
}
