/**
 * Two imgflow sites through an OCI registry, on real components: a real registry (TLS, basic auth),
 * one site's builder and NAS building a version from a recipe and `imgflow push` signing it there;
 * oras and cosign, the real clients, agreeing with imgflow about what was pushed; a second site
 * (a state directory, a cloud site and workers of its own, given the public key only) subscribed
 * with `imgflow subscribe oci://... --key` whose sync registers the version in its catalog with the
 * signature verified, the same bytes. A second sync with nothing changed downloads no layer and
 * registers nothing; the next version pushed is added beside the first, which is not downloaded again.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { TEMPLATE } from '../../activities/cloud/registry/types.js';
import { A, ARTIFACT_TYPE } from '../../activities/oci/artifact.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { loadConfig, paths } from '../../lib/config.js';
import { hashFile } from '../../lib/files.js';
import type { SyncOutcome } from '../../workflows/subscription/messages.js';
import { planRole } from '../../workers/roles.js';
import { imgflowAsync } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { tinyImageRecipe } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import {
  blobRequests,
  clientToolsEnv,
  cosignBinary,
  orasBinary,
  startRegistry,
  type TestRegistry,
} from '../support/oci-registry.js';
import { NAMESPACE, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

const dir = tempDir('imgflow-oci-site-');
let registry: TestRegistry;
let oras: string;
let cosign: string;
let toolsEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  requireTools('tar', 'mkfs.ext4', 'qemu-img', 'rsync', 'openssl');
  oras = orasBinary();
  cosign = cosignBinary();
  registry = await startRegistry(path.join(dir, 'registry'));
  toolsEnv = clientToolsEnv(registry, path.join(dir, 'tools'));
});
afterAll(async () => {
  await registry?.stop();
});

const slug = (prefix: string) => uniqueQueue(prefix).replace(/[^a-z0-9-]/g, '-');

function tool(binary: string, args: string[]) {
  const r = spawnSync(binary, args, { cwd: dir, env: toolsEnv, encoding: 'utf8', timeout: 120_000 });
  expect(r.status, `${path.basename(binary)} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('two sites through an OCI registry', () => {
  it('a version built here and pushed signed is registered, verified, by a site subscribed to the repository; oras and cosign agree', async () => {
    const image = slug('shared');
    const siteA = loadConfig({ home: path.join(dir, 'site-a'), host: slug('nas') }, {});
    const siteB = loadConfig({ home: path.join(dir, 'site-b'), site: slug('siteb') }, {});
    const { logger } = memoryLogger();
    const roles = [
      planRole('builder', siteA, 'x86_64', logger),
      planRole('nas', siteA, 'x86_64', logger),
      planRole('cloud', siteB, 'x86_64', logger),
      planRole('control', siteB, 'x86_64', logger),
    ];
    const connection = ['--address', inject('temporalAddress'), '--namespace', NAMESPACE];
    const atA = (...args: string[]) =>
      imgflowAsync([...connection, '--home', siteA.home, ...args], { IMGFLOW_USER: 'alice' });
    const atB = (...args: string[]) =>
      imgflowAsync([...connection, '--home', siteB.home, ...args], { IMGFLOW_USER: 'bob' });
    const repository = `sites/${image}`;
    const repo = `${registry.address}/${repository}`;
    const access = ['--credentials-file', registry.credentialsFile, '--ca-file', registry.caFile];
    const subscription = `oci-${image}`;
    const catalog = new CatalogRegistry({ dir: paths(siteB).catalog });
    const layerGets = (digest: string) => blobRequests(registry, repository, digest).filter((l) => l.includes('"GET '));

    await withWorkers(
      { workflowQueue: WORKFLOW_QUEUE, activities: Object.fromEntries(roles.map((r) => [r.taskQueue, r.activities])) },
      async () => {
        // Site A builds a version and pushes it, signed with its key.
        const recipe = await tinyImageRecipe(createRunner(logger), dir, image);
        const buildAndPush = async (message: string) => {
          const built = await atA('build', recipe, '-m', message, '--store', siteA.host);
          expect(built.status, built.stderr).toBe(0);
          const [version] = (JSON.parse((await atA('--json', 'versions', image)).stdout) as VersionRecord[]).slice(-1);
          const pushed = await atA('--json', 'push', `${image}:${version!.id}`, '--to', repo, '--key', key, ...access);
          expect(pushed.status, pushed.stderr).toBe(0);
          return { version: version!, pushed: JSON.parse(pushed.stdout) as Record<string, unknown> };
        };
        expect((await atA('signing-key', path.join(siteA.home, 'keys', 'site'))).status).toBe(0);
        const key = path.join(siteA.home, 'keys', 'site.key');
        const { version: v1, pushed } = await buildAndPush('for the other site');
        const artifact = v1.artifacts[0]!;
        expect([v1.id, artifact.format, artifact.host]).toEqual(['v1', 'qcow2', siteA.host]);
        expect(pushed).toMatchObject({
          reference: `${repo}:v1@${String(pushed.digest)}`,
          uploadedBlobs: 2,
          uploadedBytes: artifact.bytes,
          manifestPut: true,
          signed: true,
        });
        const digest = pushed.digest as string;
        const layer = `sha256:${artifact.sha256}`;

        // oras and cosign, the real clients, agree about what was pushed.
        const pub = path.join(siteA.home, 'keys', 'site.pub');
        expect(JSON.parse(tool(oras, ['manifest', 'fetch', '--descriptor', `${repo}:v1`]))).toMatchObject({
          digest,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
        });
        const manifest = JSON.parse(tool(oras, ['manifest', 'fetch', `${repo}@${digest}`])) as {
          artifactType: string;
          layers: { digest: string; size: number; annotations: Record<string, string> }[];
          annotations: Record<string, string>;
        };
        expect(manifest.artifactType).toBe(ARTIFACT_TYPE);
        expect(manifest.annotations).toMatchObject({
          [A.image]: image,
          [A.imageVersion]: 'v1',
          [A.glanceArch]: 'x86_64',
          [A.builtBy]: 'alice',
          [A.recipeDigest]: v1.recipeDigest,
        });
        expect(manifest.layers).toEqual([
          expect.objectContaining({
            digest: layer,
            size: artifact.bytes,
            annotations: expect.objectContaining({
              [A.title]: `${image}-v1.qcow2`,
              [A.sha512]: await hashFile(artifact.path, 'sha512'),
            }) as unknown,
          }),
        ]);
        expect(tool(oras, ['repo', 'tags', repo]).split('\n').filter(Boolean).sort()).toEqual([
          `${digest.replace(':', '-')}.sig`,
          'v1',
        ]);
        const verified = JSON.parse(
          tool(cosign, ['verify', '--key', pub, '--insecure-ignore-tlog=true', `${repo}:v1`]),
        ) as { critical: { image: Record<string, string> } }[];
        expect(verified.map((s) => s.critical.image['docker-manifest-digest'])).toEqual([digest]);

        // Site B is given the public key only, subscribes, and its sync registers the version verified.
        const trusted = path.join(siteB.home, 'trusted', 'site-a.pub');
        fs.mkdirSync(path.dirname(trusted), { recursive: true });
        fs.copyFileSync(pub, trusted);
        const fingerprint = createHash('sha256')
          .update(createPublicKey(fs.readFileSync(trusted)).export({ type: 'spki', format: 'der' }))
          .digest('hex');
        const subscribed = await atB(
          'subscribe',
          `oci://${repo}`,
          '--key',
          trusted,
          '--arch',
          'x86_64',
          '--site',
          siteB.site,
          '--name',
          subscription,
          '--every',
          '1h',
          ...access,
        );
        expect(subscribed.status, subscribed.stderr).toBe(0);
        const sync = async () => {
          const r = await atB('--json', 'sync', subscription);
          expect(r.status, r.stderr).toBe(0);
          return JSON.parse(r.stdout) as SyncOutcome;
        };
        const first = await sync();
        expect(first).toMatchObject({ status: 'applied', report: { add: [`${image}-v1`], update: [] } });
        expect(first.outcomes).toEqual([expect.objectContaining({ identifier: `${image}-v1`, ok: true })]);
        const registered = await catalog.list();
        expect(registered).toEqual([
          expect.objectContaining({
            name: `${image}-v1`,
            state: 'READY',
            template: expect.objectContaining({
              [TEMPLATE.subscription]: subscription,
              [TEMPLATE.version]: 'v1',
              [TEMPLATE.uri]: `oci://${repo}@${layer}`,
              [TEMPLATE.sha512]: await hashFile(artifact.path, 'sha512'),
              IMGFLOW_COMMENTS: `oci ${repo}:v1@${digest}; signature verified (key sha256:${fingerprint.slice(0, 16)}...)`,
            }) as unknown,
          }),
        ]);
        // The same disk: what site B registered reads as what site A stored.
        const compared = spawnSync('qemu-img', ['compare', await catalog.diskPath(registered[0]!.id), artifact.path], {
          encoding: 'utf8',
        });
        expect(compared.status, compared.stdout + compared.stderr).toBe(0);
        const gets = layerGets(layer).length;
        expect(gets).toBeGreaterThan(0);

        // Nothing changed: nothing downloaded, nothing registered.
        const unchanged = await sync();
        expect(unchanged).toMatchObject({
          status: 'applied',
          report: { add: [], update: [], metadata: [], expire: [], unchanged: [`${image}-v1`] },
        });
        expect(layerGets(layer)).toHaveLength(gets);
        expect(await catalog.list()).toEqual(registered);

        // The next version pushed: added beside the first, whose layer is not downloaded again.
        const { version: v2, pushed: pushed2 } = await buildAndPush('next');
        expect(pushed2).toMatchObject({ reference: expect.stringMatching(/:v2@sha256:/) as unknown, signed: true });
        const next = await sync();
        expect(next).toMatchObject({
          status: 'applied',
          report: { add: [`${image}-v2`], update: [], expire: [], unchanged: [`${image}-v1`] },
        });
        expect(layerGets(layer)).toHaveLength(gets);
        const after = await catalog.list();
        expect(after.map((i) => [i.name, i.template[TEMPLATE.version], i.template[TEMPLATE.uri]])).toEqual([
          [`${image}-v1`, 'v1', `oci://${repo}@${layer}`],
          [`${image}-v2`, 'v2', `oci://${repo}@sha256:${v2.artifacts[0]!.sha256}`],
        ]);
        expect((await atB('unsubscribe', subscription)).status).toBe(0);
      },
    );
  });
});
