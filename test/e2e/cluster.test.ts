/**
 * The production cluster: the real Temporal server on PostgreSQL, one process per service, mutual
 * TLS on the frontend and a token checked on every call. One cluster for the file (its own name,
 * ports, state directory and databases), dropped afterwards.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHostActivities } from '../../activities/host.js';
import { createRunner } from '../../activities/runner.js';
import { loadConfig } from '../../lib/config.js';
import { connectionSettings, type ConnectionSettings } from '../../lib/connection.js';
import {
  clientTls,
  clusterDown,
  clusterUp,
  frontendAddress,
  restartService,
  type UpResult,
} from '../../starters/cluster/cluster.js';
import { ensurePki, FRONTEND_TLS_NAME, issueCert, issueClientCert, type CertPair } from '../../starters/cluster/pki.js';
import { pidOf } from '../../starters/cluster/services.js';
import { mintToken, writeTokenFile, type TokenRole } from '../../starters/cluster/tokens.js';
import { pingWorkflow } from '../../workflows/ping.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { testDataConverter, uniqueQueue, withWorkers, type TestServer } from '../support/temporal.js';
import { requireClusterBinaries } from '../support/tools.js';
import { until } from '../support/wait.js';

const NAMESPACE = 'imgflow';

describe('a Temporal cluster behind mutual TLS and tokens', () => {
  const root = tempDir('imgflow-cluster-');
  const dir = path.join(root, 'cluster');
  const name = `t-${randomBytes(4).toString('hex')}`;
  let up: UpResult;

  beforeAll(async () => {
    requireClusterBinaries();
    up = await clusterUp({ name, dir, namespace: NAMESPACE });
  }, 300_000);

  // Also after a failed `up`: whatever it started stops, and its databases go.
  afterAll(async () => {
    if (fs.existsSync(path.join(dir, 'cluster.json'))) await clusterDown(dir, { dropDatabases: true });
  });

  const token = (role: TokenRole, ttlSeconds = 600) =>
    mintToken(up.state.signingKey, { role, namespace: NAMESPACE, subject: `test-${role}`, ttlSeconds });

  /** A client of the cluster with this certificate (none: TLS without one) and this token. */
  const settingsFor = (o: { cert?: CertPair; role?: TokenRole }): ConnectionSettings => {
    const tls = o.cert
      ? clientTls(up.state, o.cert)
      : { enabled: true, caPath: up.state.pki.caCert, serverName: FRONTEND_TLS_NAME };
    return connectionSettings({
      address: frontendAddress(up.state),
      tls,
      ...(o.role ? { apiKey: token(o.role) } : {}),
    });
  };
  const server = (o: { cert?: CertPair; role?: TokenRole }): TestServer => ({
    settings: settingsFor(o),
    namespace: NAMESPACE,
  });

  async function asOperator<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    const connection = await Connection.connect(
      settingsFor({ cert: issueClientCert(up.state.pki, 'operator'), role: 'operator' }),
    );
    try {
      return await fn(new Client({ connection, namespace: NAMESPACE, dataConverter: testDataConverter() }));
    } finally {
      await connection.close();
    }
  }

  const pingCount = () =>
    asOperator((client) => client.workflow.count('WorkflowType = "pingWorkflow"').then((c) => c.count));
  const exists = (workflowId: string) =>
    asOperator((client) =>
      client.workflow
        .getHandle(workflowId)
        .describe()
        .then(
          () => true,
          () => false,
        ),
    );

  function hostActivities(host: string) {
    const config = loadConfig({ home: root, host }, {});
    return createHostActivities({ role: 'nas', config, arch: 'x86_64', run: createRunner(memoryLogger().logger) });
  }

  it('runs a workflow over mutual TLS for a worker and an operator with the right tokens', async () => {
    const host = uniqueQueue('n');
    const workflowQueue = uniqueQueue('wf');
    const worker = server({ cert: issueClientCert(up.state.pki, host), role: 'worker' });
    const facts = await withWorkers(
      { workflowQueue, activities: { [`nas.${host}`]: hostActivities(host) }, server: worker },
      () =>
        asOperator((client) =>
          client.workflow.execute(pingWorkflow, {
            taskQueue: workflowQueue,
            workflowId: uniqueQueue('ping'),
            args: [{ queue: `nas.${host}` }],
          }),
        ),
    );
    expect(facts).toMatchObject({ host, role: 'nas', pid: process.pid });
  });

  describe('refuses, and starts nothing for,', () => {
    const otherCa = () => {
      const other = ensurePki(path.join(root, 'other-pki'), { sans: ['127.0.0.1'] });
      return issueClientCert(other, 'intruder');
    };
    const expired = () => {
      const pki = up.state.pki;
      return issueCert({ cert: pki.caCert, key: pki.caKey! }, path.join(root, 'expired'), 'expired', {
        cn: 'expired',
        usage: 'client',
        days: -1,
      });
    };
    const cases: [string, () => { cert?: CertPair; role?: TokenRole }][] = [
      ['a client with no certificate', () => ({ role: 'operator' })],
      ['a certificate from another CA', () => ({ cert: otherCa(), role: 'operator' })],
      ['an expired certificate', () => ({ cert: expired(), role: 'operator' })],
      ['a good certificate with no token', () => ({ cert: issueClientCert(up.state.pki, 'operator') })],
    ];
    for (const [what, client] of cases) {
      it(what, async () => {
        const before = await pingCount();
        const workflowId = uniqueQueue('refused');
        const attempt = async () => {
          const connection = await Connection.connect({ ...settingsFor(client()), connectTimeout: 5000 });
          try {
            await new Client({ connection, namespace: NAMESPACE, dataConverter: testDataConverter() }).workflow.start(
              pingWorkflow,
              { taskQueue: 'nobody', workflowId, args: [{ queue: 'nas.nobody' }] },
            );
          } finally {
            await connection.close();
          }
        };
        await expect(attempt()).rejects.toThrow();
        expect(await exists(workflowId)).toBe(false);
        expect(await pingCount()).toBe(before);
      });
    }
  });

  it("lets a viewer list and describe, and refuses a viewer's start", async () => {
    const viewer = server({ cert: issueClientCert(up.state.pki, 'viewer'), role: 'viewer' });
    const connection = await Connection.connect(viewer.settings);
    const client = new Client({ connection, namespace: NAMESPACE, dataConverter: testDataConverter() });
    try {
      const listed = [];
      for await (const wf of client.workflow.list({ query: 'WorkflowType = "pingWorkflow"' })) listed.push(wf);
      expect(listed.length).toBeGreaterThan(0);
      expect((await client.workflow.getHandle(listed[0]!.workflowId).describe()).type).toBe('pingWorkflow');

      const before = await pingCount();
      const workflowId = uniqueQueue('viewer');
      const error = (await client.workflow
        .start(pingWorkflow, { taskQueue: 'nobody', workflowId, args: [{ queue: 'nas.nobody' }] })
        .catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(Error);
      expect(`${error.message} ${(error.cause as Error | undefined)?.message ?? ''}`).toMatch(
        /unauthorized|permission/i,
      );
      expect(await exists(workflowId)).toBe(false);
      expect(await pingCount()).toBe(before);
    } finally {
      await connection.close();
    }
  });

  it("refuses a viewer's start from the CLI in one line, with the Temporal CLI's TLS variables", async () => {
    const cert = issueClientCert(up.state.pki, 'viewer');
    const tokenPath = path.join(root, 'viewer.token');
    writeTokenFile(tokenPath, token('viewer'));
    const before = await pingCount();
    const result = await imgflowAsync(['--home', root, 'ping', 'nas.nobody', '--wait', '1'], {
      TEMPORAL_ADDRESS: frontendAddress(up.state),
      TEMPORAL_NAMESPACE: NAMESPACE,
      TEMPORAL_TLS_CLIENT_CERT_PATH: cert.cert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: cert.key,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: up.state.pki.caCert,
      TEMPORAL_TLS_SERVER_NAME: FRONTEND_TLS_NAME,
      IMGFLOW_API_KEY_FILE: tokenPath,
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^imgflow: refused by the Temporal server/),
    ]);
    expect(result.stderr).not.toMatch(/eyJ[\w-]+\./);
    expect(await pingCount()).toBe(before);
  });

  it('finishes a workflow waiting on an activity across a SIGKILL and restart of the history service', async () => {
    const host = uniqueQueue('n');
    const workflowQueue = uniqueQueue('wf');
    const worker = server({ cert: issueClientCert(up.state.pki, 'orchestrator'), role: 'worker' });
    const workflowId = `ping-${randomUUID()}`;
    // Only the workflow worker runs: the activity waits on the host's queue while history dies.
    await withWorkers({ workflowQueue, server: worker }, async () => {
      await asOperator(async (client) => {
        const handle = await client.workflow.start(pingWorkflow, {
          taskQueue: workflowQueue,
          workflowId,
          args: [{ queue: `nas.${host}`, waitSeconds: 300 }],
        });
        await until(
          'the activity to be scheduled',
          async () => ((await handle.describe()).raw.pendingActivities?.length ?? 0) > 0,
        );
      });
      const killed = pidOf(up.state, 'history');
      const restarted = await restartService(dir, 'history');
      expect(restarted).not.toBe(killed);
    });
    const nas = server({ cert: issueClientCert(up.state.pki, host), role: 'worker' });
    const facts = await withWorkers(
      { workflowQueue, activities: { [`nas.${host}`]: hostActivities(host) }, server: nas },
      () => asOperator((client) => client.workflow.getHandle<typeof pingWorkflow>(workflowId).result()),
    );
    expect(facts).toMatchObject({ host, role: 'nas' });
    expect(await pingCount()).toBeGreaterThan(0);
  });
});
