/**
 * One process holding the Workers of many hosts of one role, as the scale bench runs the hosts it
 * does not give a network namespace of their own: each host polls its own queue (`nas.<host>`,
 * `compute.<host>`) on its own connection, with its own client certificate, worker token, home
 * and settings, and its own identity (`<role>@<host>:<pid>`). Started by bench/scale.ts with the
 * path of a spec file (no secret in it: certificate, key and token are named by path).
 *
 * Prints one JSON line `{"msg":"pool started",...}` once every Worker runs; SIGTERM drains them all.
 */
import fs from 'node:fs';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { checkRole } from '../../workers/roles.js';
import { createWorker } from '../../workers/worker.js';
import { installRuntime } from '../../workers/runtime.js';
import { loadConfig, machineArch, type TlsSettings } from '../../lib/config.js';
import { connectionSettings } from '../../lib/connection.js';
import { createLogger } from '../../lib/logger.js';

export interface PoolHost {
  host: string;
  home: string;
  /** The role's settings for this host (IMGFLOW_NAS_POOL, IMGFLOW_NAS_EXPORT, ...). */
  env: Record<string, string>;
  tls: TlsSettings;
  apiKeyFile?: string;
}

export interface PoolSpec {
  role: 'nas' | 'compute';
  address: string;
  namespace: string;
  codecKeys: string;
  hosts: PoolHost[];
}

async function main(specFile: string): Promise<void> {
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as PoolSpec;
  const role = checkRole(spec.role);
  const logger = createLogger(`scale-${role}-pool`, process.env.IMGFLOW_LOG_LEVEL ?? 'warn');
  installRuntime(logger, '');
  const arch = machineArch();
  const held: { worker: Worker; connection: NativeConnection }[] = [];
  for (const h of spec.hosts) {
    const config = loadConfig(
      {
        address: spec.address,
        namespace: spec.namespace,
        codecKeys: spec.codecKeys,
        home: h.home,
        host: h.host,
        tls: h.tls,
        ...(h.apiKeyFile ? { apiKeyFile: h.apiKeyFile } : {}),
        metricsAddress: '',
      },
      {},
    );
    fs.mkdirSync(config.home, { recursive: true, mode: 0o700 });
    const connection = await NativeConnection.connect(connectionSettings(config));
    const env = { ...process.env, ...h.env };
    const { worker } = await createWorker({ role, config, arch, connection, logger, env });
    held.push({ worker, connection });
  }
  const running = held.map(({ worker }) => worker.run());
  const stop = () => {
    for (const { worker } of held) if (worker.getState() === 'RUNNING') worker.shutdown();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  console.log(JSON.stringify({ msg: 'pool started', role, pid: process.pid, hosts: held.length }));
  const outcomes = await Promise.allSettled(running);
  await Promise.allSettled(held.map(({ connection }) => connection.close()));
  const failed = outcomes.find((o) => o.status === 'rejected');
  if (failed) {
    console.error(`a ${role} worker failed: ${String(failed.reason).split('\n')[0]}`);
    process.exit(1);
  }
}

await main(process.argv[2] ?? '').catch((err: Error) => {
  console.error(`scale pool: ${err.message.split('\n')[0]}`);
  process.exit(1);
});
