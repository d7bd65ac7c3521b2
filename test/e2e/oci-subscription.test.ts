/**
 * A second site subscribed to an OCI repository (`imgflow subscribe oci://...  --key`), through the
 * same subscription workflow as signed lists: every tag verified before a byte is used, then the
 * same reconcile and swap; an unchanged repository registers and downloads nothing; a tag that moves
 * is an update, one that disappears expires; an unsigned tag refuses the sync naming the check, with
 * nothing registered; a subscription with checks off marks every image it lists.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createCloudActivities } from '../../activities/cloud/index.js';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { generateSigningKey } from '../../activities/oci/cosign.js';
import { digestOf, MEDIA } from '../../activities/oci/registry.js';
import { clientFor, pushVersion } from '../../activities/oci/transfer.js';
import { createRunner } from '../../activities/runner.js';
import { parseReference } from '../../common/oci.js';
import { CONTROL_QUEUE, queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { startRegistry, type TestRegistry } from '../support/oci-registry.js';
import { NAMESPACE, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const dir = tempDir('imgflow-oci-sub-');
let registry: TestRegistry;
const keys = generateSigningKey();
const other = generateSigningKey();

beforeAll(async () => {
  requireTools('qemu-img');
  registry = await startRegistry(path.join(dir, 'registry'));
  fs.writeFileSync(path.join(dir, 'site.pub'), keys.publicPem);
});
afterAll(async () => {
  await registry?.stop();
});

const version = (v: string) => ({
  image: 'node',
  version: v,
  arch: 'x86_64',
  os: 'debian-12',
  createdAt: '2026-12-01T10:00:00.000Z',
  by: 'alice',
  message: `node ${v}`,
  recipeDigest: 'ab'.repeat(32),
  provenance: { builder: 'b', source: 's', tools: {}, workflowId: 'w' },
});

/** A small real qcow2 with distinct bytes, as a NAS would store it. */
function disk(name: string, mib: number) {
  const file = path.join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${mib}M`]);
  const data = fs.readFileSync(file);
  return { format: 'qcow2' as const, path: file, sha256: digestOf(data).slice(7), bytes: data.length };
}

async function push(repository: string, tag: string, v: string, mib: number, key = keys.privatePem) {
  const ref = parseReference('to', `${registry.address}/${repository}:${tag}`);
  const client = await clientFor(ref, { credentialsFile: registry.credentialsFile, caFile: registry.caFile });
  try {
    return await pushVersion(
      client,
      ref,
      version(v),
      [disk(`${repository.replace('/', '-')}-${tag}-${v}.qcow2`, mib)],
      createPrivateKey(key),
    );
  } finally {
    client.close();
  }
}

describe('imgflow subscribe oci://', () => {
  it('registers verified tags, downloads nothing when unchanged, swaps a moved tag, expires a removed one, refuses an unsigned one', async () => {
    const site = uniqueQueue('ocisite');
    const repository = `sites/${site}`;
    await push(repository, 'v1', 'v1', 1);
    const v2 = await push(repository, 'v2', 'v2', 2);

    const catalog = new CatalogRegistry({ dir: path.join(dir, 'catalog') });
    const acts = createCloudActivities({
      run: createRunner(memoryLogger().logger),
      config: { home: path.join(dir, 'site2'), site },
      registry: catalog,
      trust: { caDir: dir },
    });
    const base = ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', path.join(dir, 'site2')];
    const access = ['--credentials-file', registry.credentialsFile, '--ca-file', registry.caFile];
    const name = `oci-${site}`;
    await withWorkers(
      { workflowQueue: WORKFLOW_QUEUE, activities: { [queues.cloud(site)]: acts, [CONTROL_QUEUE]: acts } },
      async () => {
        const missingKey = await imgflowAsync([
          ...base,
          'subscribe',
          `oci://${registry.address}/${repository}`,
          '--site',
          site,
        ]);
        expect([missingKey.status, missingKey.stderr.trim()]).toEqual([
          2,
          'imgflow: --key: expected the public key signatures must verify with (or --insecure)',
        ]);
        const withTag = await imgflowAsync([
          ...base,
          'subscribe',
          `oci://${registry.address}/${repository}:v1`,
          '--key',
          path.join(dir, 'site.pub'),
          '--site',
          site,
        ]);
        expect([withTag.status, withTag.stderr.trim()]).toEqual([
          2,
          expect.stringMatching(/^imgflow: url: expected oci:\/\/<registry>\/<repository> without a tag or digest/),
        ]);

        const subscribed = await imgflowAsync([
          ...base,
          'subscribe',
          `oci://${registry.address}/${repository}`,
          '--key',
          path.join(dir, 'site.pub'),
          '--arch',
          'x86_64',
          '--site',
          site,
          '--name',
          name,
          '--every',
          '1h',
          ...access,
        ]);
        expect(subscribed.status, subscribed.stderr).toBe(0);
        const sync = async () => {
          const r = await imgflowAsync([...base, '--json', 'sync', name]);
          return {
            status: r.status,
            stderr: r.stderr,
            out: r.stdout
              ? (JSON.parse(r.stdout) as {
                  status: string;
                  reason?: string;
                  report: Record<string, unknown>;
                  outcomes: { identifier: string; action: string; ok: boolean; note?: string }[];
                })
              : undefined,
          };
        };
        const first = await sync();
        expect(first.status, first.stderr).toBe(0);
        expect(first.out).toMatchObject({ status: 'applied', report: { add: [`${site}-v1`, `${site}-v2`] } });
        const images = await catalog.list();
        expect(images.map((i) => i.name).sort()).toEqual([`${site}-v1`, `${site}-v2`]);
        expect(images.find((i) => i.name === `${site}-v2`)!.template.IMGFLOW_COMMENTS).toMatch(
          new RegExp(`^oci .*:v2@${v2.digest}; signature verified \\(key sha256:`),
        );

        // Unchanged: nothing to do, and the download cache is not touched.
        const cache = path.join(dir, 'site2', 'cloud', 'cache', 'sha512');
        const before = fs.readdirSync(cache).map((f) => fs.statSync(path.join(cache, f)).mtimeMs);
        const unchanged = await sync();
        expect(unchanged.out).toMatchObject({
          status: 'applied',
          report: { add: [], update: [], unchanged: [`${site}-v1`, `${site}-v2`] },
        });
        expect(fs.readdirSync(cache).map((f) => fs.statSync(path.join(cache, f)).mtimeMs)).toEqual(before);

        // v1 moves to new bytes (an update: the old image parked); v2 goes (expired).
        await push(repository, 'v1', 'v1.1', 3);
        const client = await clientFor(parseReference('to', `${registry.address}/${repository}`), {
          credentialsFile: registry.credentialsFile,
          caFile: registry.caFile,
        });
        await client.deleteManifest(v2.digest);
        const moved = await sync();
        expect(moved.out?.report).toMatchObject({ update: [`${site}-v1`], expire: [{ identifier: `${site}-v2` }] });
        expect(moved.out?.outcomes.every((o) => o.ok)).toBe(true);
        const after = await catalog.list();
        expect(after.find((i) => i.name === `${site}-v1`)!.template.IMGFLOW_VERSION).toBe('v1.1');

        // An unsigned tag, and one signed by another key: the sync is refused, nothing registered.
        const count = (await catalog.list()).length;
        const layer = Buffer.from('unsigned');
        await client.pushBlob(digestOf(layer), layer.length, layer);
        await client.pushBlob(digestOf('{}'), 2, Buffer.from('{}'));
        const manifest = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MEDIA.ociManifest,
            config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf('{}'), size: 2 },
            layers: [
              { mediaType: 'application/vnd.imgflow.image.layer.v1.raw', digest: digestOf(layer), size: layer.length },
            ],
          }),
        );
        await client.putManifest('v3', manifest, MEDIA.ociManifest);
        const refused = await sync();
        expect(refused.out).toMatchObject({
          status: 'refused',
          reason: expect.stringMatching(
            /^list not applied: oci check "signature" failed: tag v3: sites\/.* is not signed \(no sha256-[0-9a-f]{64}\.sig\)$/,
          ) as unknown,
        });
        await client.deleteManifest(digestOf(manifest));
        await push(repository, 'v4', 'v4', 1, other.privatePem);
        const wrongKey = await sync();
        expect(wrongKey.out).toMatchObject({
          status: 'refused',
          reason: expect.stringMatching(
            /^list not applied: oci check "signature-key" failed: tag v4: none of the 1 signatures of .* is by the given key$/,
          ) as unknown,
        });
        expect((await catalog.list()).length).toBe(count);
        client.close();

        // Checks off: every image listed says so.
        const insecureRepo = `sites/${site}-open`;
        await push(insecureRepo, 'v1', 'v1', 1, other.privatePem);
        const open = `oci-${site}-open`;
        expect(
          (
            await imgflowAsync([
              ...base,
              'subscribe',
              `oci://${registry.address}/${insecureRepo}`,
              '--insecure',
              '--arch',
              'x86_64',
              '--site',
              site,
              '--name',
              open,
              ...access,
            ])
          ).status,
        ).toBe(0);
        const openSync = await imgflowAsync([...base, '--json', 'sync', open]);
        expect(openSync.status, openSync.stderr).toBe(0);
        const marked = (await catalog.list()).find((i) => i.name === `${site}-open-v1`)!;
        expect(marked.template.IMGFLOW_COMMENTS).toMatch(
          /; UNVERIFIED: signature checks are off for this subscription$/,
        );
        for (const sub of [name, open]) expect((await imgflowAsync([...base, 'unsubscribe', sub])).status).toBe(0);
      },
    );
  });
});
