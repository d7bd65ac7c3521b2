/**
 * One real Temporal dev server for the whole run (headless, its own port and SQLite file), and
 * the workflow bundle made once. A missing Temporal CLI fails the run; it never skips.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Long from 'long';
import type { TestProject } from 'vitest/node';
import { bundleWorkflowCode } from '@temporalio/worker';
import {
  connectWithin,
  ensureSearchAttributes,
  ensureTemporalCli,
  spawnDevServer,
  waitForNamespace,
} from '../../starters/temporal-server.js';
import { createKeyring } from '../../lib/keyring.js';
import { workflowsPath } from '../../workers/worker.js';
import { freePort } from './ports.js';

/** More than vitest's maxWorkers, so every fork finds its own. */
export const TEST_NAMESPACES = ['imgflow-1', 'imgflow-2', 'imgflow-3', 'imgflow-4'];

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    workflowBundlePath: string;
    /** The run's payload keyring: test clients, workers and every imgflow they spawn seal payloads with it. */
    codecKeysPath: string;
    /** The dev server's SQLite database: a test reads its bytes to see what Temporal stores. */
    temporalDbFile: string;
  }
}

export default async function setup(project: TestProject) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-test-temporal-'));
  // One keyring for the run, inherited by the forks and by every imgflow process a test spawns.
  const codecKeysPath = path.join(dir, 'keys', 'codec.json');
  createKeyring(codecKeysPath);
  process.env.IMGFLOW_CODEC_KEYS = codecKeysPath;
  const dbFile = path.join(dir, 'test.sqlite');
  const server = spawnDevServer({
    cli: ensureTemporalCli((line) => process.stderr.write(`${line}\n`)),
    port: await freePort(),
    dbFile,
    logFile: path.join(dir, 'server.log'),
    namespace: 'imgflow',
  });
  const connection = await connectWithin(server.address, 60_000);
  if (!connection) throw new Error(`the Temporal dev server for the tests did not start; see ${dir}/server.log`);
  // One namespace per vitest worker: files running at once never share a task queue.
  for (const namespace of TEST_NAMESPACES) {
    await connection.workflowService
      .registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86400) } })
      .catch(() => undefined);
    await waitForNamespace(connection, namespace, 30_000);
    await ensureSearchAttributes(connection, namespace);
  }
  await connection.close();

  const bundle = await bundleWorkflowCode({
    workflowsPath,
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} },
  });
  const bundlePath = path.join(dir, 'workflow-bundle.js');
  fs.writeFileSync(bundlePath, bundle.code);

  project.provide('temporalAddress', server.address);
  project.provide('workflowBundlePath', bundlePath);
  project.provide('codecKeysPath', codecKeysPath);
  project.provide('temporalDbFile', dbFile);
  return () => {
    try {
      process.kill(-server.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
}
