/**
 * `imgflow push` on a real server and a real registry (TLS, basic auth): a version registered in
 * its lineage, stored on a NAS, is pushed by the NAS's worker with annotations and a signature;
 * pushing it again uploads nothing; `imgflow oci-verify` verifies and pulls it; a channel names
 * what is pushed; bad input is refused in one line naming the field, nothing started.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOciPushActivities } from '../../activities/oci/index.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { paths } from '../../lib/config.js';
import { lineageWorkflow } from '../../workflows/lineage/workflow.js';
import { promoteUpdate, registerVersionUpdate, tagUpdate } from '../../workflows/lineage/messages.js';
import { pushWorkflowId } from '../../workflows/push/messages.js';
import { imgflowAsync } from '../support/cli.js';
import { saveHistory } from '../support/histories.js';
import { tempDir } from '../support/dirs.js';
import { startRegistry, type TestRegistry } from '../support/oci-registry.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { newVersion } from '../support/versions.js';

const home = tempDir('imgflow-push-');
const host = uniqueQueue('nas').replace(/[^a-z0-9-]/g, '-');
let registry: TestRegistry;
const cli = (...args: string[]) =>
  imgflowAsync(['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home, '--json', ...args]);

beforeAll(async () => {
  registry = await startRegistry(path.join(home, 'registry'));
});
afterAll(async () => {
  await registry?.stop();
});

/** A stored file in the NAS's image store, and its record. */
function storedFile(image: string, version: string, bytes: number, seed: number) {
  const dir = path.join(paths({ home }).nas(host), 'store', image, version);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${image}-${version}.qcow2`);
  const data = Buffer.alloc(bytes, seed);
  data.write(`disk ${image} ${version}`);
  fs.writeFileSync(file, data);
  return { format: 'qcow2' as const, host, path: file, sha256: createHash('sha256').update(data).digest('hex'), bytes };
}

describe('imgflow push', () => {
  it('pushes and signs a stored version from its NAS; again uploads nothing; oci-verify pulls it; bad input refused', async () => {
    const image = uniqueQueue('pushimg').replace(/[^a-z0-9-]/g, '-');
    const { client, connection } = await testClient();
    const nas = createOciPushActivities({ config: { home, host } });
    await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities: { [`nas.${host}`]: nas } }, async () => {
      const h = await client.workflow.start(lineageWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `lineage-${image}`,
        args: [{ image }],
      });
      await h.executeUpdate(registerVersionUpdate, {
        args: [{ ...newVersion(1), artifacts: [storedFile(image, 'v1', 300_000, 1)] }],
      });
      await h.executeUpdate(registerVersionUpdate, {
        args: [{ ...newVersion(2), artifacts: [storedFile(image, 'v2', 200_000, 2)] }],
      });
      await h.executeUpdate(tagUpdate, { args: [{ by: 'alice', version: 'v1', name: 'first' }] });
      await h.executeUpdate(promoteUpdate, { args: [{ by: 'alice', tag: 'first', channel: 'test' }] });

      const made = await cli('signing-key', path.join(home, 'keys', 'site'));
      expect(made.stderr).toMatch(/made .*site\.key/);
      const key = path.join(home, 'keys', 'site.key');
      const pub = path.join(home, 'keys', 'site.pub');
      expect(fs.statSync(key).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(pub, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);

      const repo = `${registry.address}/sites/${image}`;
      const access = ['--credentials-file', registry.credentialsFile, '--ca-file', registry.caFile];
      const first = await cli('push', `${image}@test`, '--to', repo, '--key', key, ...access);
      expect(first.stderr).toBe('');
      const pushed = JSON.parse(first.stdout) as Record<string, unknown>;
      expect(pushed).toMatchObject({
        reference: expect.stringMatching(new RegExp(`^${repo}:v1@sha256:[0-9a-f]{64}$`)) as unknown,
        uploadedBlobs: 2,
        uploadedBytes: 300_000,
        manifestPut: true,
        signed: true,
      });
      await saveHistory('pushWorkflow', client.workflow.getHandle(pushWorkflowId(image, 'v1', `${repo}:v1`)));
      const again = JSON.parse(
        (await cli('push', `${image}:first`, '--to', repo, '--key', key, ...access)).stdout,
      ) as Record<string, unknown>;
      expect(again).toMatchObject({
        digest: pushed.digest,
        uploadedBlobs: 0,
        uploadedBytes: 0,
        manifestPut: false,
        signed: false,
      });
      const latest = JSON.parse(
        (await cli('push', image, '--to', `${repo}:latest`, '--key', key, ...access)).stdout,
      ) as Record<string, unknown>;
      expect(latest).toMatchObject({
        reference: expect.stringMatching(/:latest@/) as unknown,
        uploadedBytes: 200_000,
        signed: true,
      });

      const out = path.join(home, 'pulled');
      const verified = await cli('oci-verify', `${repo}:v1`, '--key', pub, '--arch', 'x86_64', '--out', out, ...access);
      expect(verified.stderr).toBe('');
      expect(JSON.parse(verified.stdout)).toMatchObject({ digest: pushed.digest, verified: pushed.digest });
      expect(fs.readdirSync(out)).toHaveLength(1);

      const other = path.join(home, 'keys', 'other');
      await cli('signing-key', other);
      const refused = await cli('oci-verify', `${repo}:v1`, '--key', `${other}.pub`, '--arch', 'x86_64', ...access);
      expect([refused.status, refused.stderr.trim()]).toEqual([
        1,
        expect.stringMatching(
          /^imgflow: oci check "signature-key" failed: none of the 1 signatures of sites\/.* is by the given key$/,
        ),
      ]);

      const bad = await cli('push', image, '--to', 'no-registry', '--key', key);
      expect([bad.status, bad.stderr.trim()]).toEqual([
        2,
        expect.stringMatching(/^imgflow: --to: expected <registry host\[:port\]>\/<repository>/),
      ]);
      const wrongNas = await cli('push', image, '--to', repo, '--key', key, '--nas', 'elsewhere', ...access);
      expect([wrongNas.status, wrongNas.stderr.trim()]).toEqual([
        2,
        expect.stringMatching(new RegExp(`^imgflow: nas: expected a NAS storing ${image}:v2 \\(${host}\\)`)),
      ]);
    });
    await connection.close();
  });
});
