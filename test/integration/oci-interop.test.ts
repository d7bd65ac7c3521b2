/**
 * imgflow against the real clients, on the real registry (TLS, basic auth): what imgflow pushes,
 * `oras pull` gets byte for byte and `cosign verify --key` accepts (and refuses with another key);
 * what `oras push` uploads and `cosign sign --key` signs, imgflow verifies, lists and pulls.
 * oras and cosign are the builds scripts/setup.sh makes; a missing one fails the test.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A } from '../../activities/oci/artifact.js';
import { generateSigningKey, publicKeyFrom } from '../../activities/oci/cosign.js';
import { listOciRepository } from '../../activities/oci/source.js';
import { clientFor, pullLayers, pushVersion, resolveArtifact } from '../../activities/oci/transfer.js';
import { parseReference } from '../../common/oci.js';
import { tempDir } from '../support/dirs.js';
import { clientToolsEnv, cosignBinary, orasBinary, startRegistry, type TestRegistry } from '../support/oci-registry.js';

const dir = tempDir('imgflow-oci-interop-');
let registry: TestRegistry;
let oras: string;
let cosign: string;
let env: NodeJS.ProcessEnv;
const keys = generateSigningKey();
const other = generateSigningKey();

function tool(binary: string, args: string[], cwd = dir) {
  return spawnSync(binary, args, { cwd, env, encoding: 'utf8', timeout: 120_000 });
}

beforeAll(async () => {
  oras = orasBinary();
  cosign = cosignBinary();
  registry = await startRegistry(path.join(dir, 'registry'));
  // Both clients read credentials from a Docker config and trust the registry's CA through Go's SSL_CERT_FILE.
  env = { ...clientToolsEnv(registry, dir), COSIGN_PASSWORD: 'interop', COSIGN_YES: 'true' };
  fs.writeFileSync(path.join(dir, 'imgflow.pub'), keys.publicPem);
  fs.writeFileSync(path.join(dir, 'other.pub'), other.publicPem);
});
afterAll(async () => {
  await registry?.stop();
});

const access = () => ({ credentialsFile: registry.credentialsFile, caFile: registry.caFile });

describe('oras and cosign', () => {
  it('pull and verify what imgflow pushes', async () => {
    const file = path.join(dir, 'node.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
    const data = fs.readFileSync(file);
    const ref = parseReference('to', `${registry.address}/interop/node:v1`);
    const client = await clientFor(ref, access());
    const pushed = await pushVersion(
      client,
      ref,
      {
        image: 'node',
        version: 'v1',
        arch: 'x86_64',
        os: 'debian-12',
        createdAt: '2026-12-01T00:00:00Z',
        by: 'alice',
        message: 'm',
        recipeDigest: 'c'.repeat(64),
        provenance: { builder: 'b', source: 's', tools: {}, workflowId: 'w' },
      },
      [{ format: 'qcow2', path: file, sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length }],
      createPrivateKey(keys.privatePem),
    );
    client.close();

    const out = path.join(dir, 'oras-out');
    const pulled = tool(oras, ['pull', '-o', out, `${registry.address}/interop/node:v1`]);
    expect(pulled.status, pulled.stderr).toBe(0);
    expect(fs.readFileSync(path.join(out, 'node-v1.qcow2')).equals(data)).toBe(true);
    const fetched = tool(oras, ['manifest', 'fetch', `${registry.address}/interop/node:v1`]);
    expect(JSON.parse(fetched.stdout)).toMatchObject({
      annotations: { [A.image]: 'node', [A.imageVersion]: 'v1', [A.glanceArch]: 'x86_64' },
    });

    const target = `${registry.address}/interop/node@${pushed.digest}`;
    const verified = tool(cosign, [
      'verify',
      '--key',
      path.join(dir, 'imgflow.pub'),
      '--insecure-ignore-tlog=true',
      target,
    ]);
    expect(verified.status, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toEqual([
      expect.objectContaining({
        critical: expect.objectContaining({ image: { 'docker-manifest-digest': pushed.digest } }) as unknown,
      }),
    ]);
    const refused = tool(cosign, [
      'verify',
      '--key',
      path.join(dir, 'other.pub'),
      '--insecure-ignore-tlog=true',
      target,
    ]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/no matching signatures/);
  });

  it('verify, list and pull what oras pushes and cosign signs', async () => {
    const work = path.join(dir, 'foreign');
    fs.mkdirSync(work);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(work, 'appliance.qcow2'), '2M']);
    const data = fs.readFileSync(path.join(work, 'appliance.qcow2'));
    const repo = `${registry.address}/interop/appliance`;
    const pushed = tool(
      oras,
      [
        'push',
        '--artifact-type',
        'application/vnd.example.vm',
        `${repo}:1.0`,
        'appliance.qcow2:application/vnd.example.disk.qcow2',
      ],
      work,
    );
    expect(pushed.status, pushed.stderr).toBe(0);
    const digest = /Digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)![1]!;
    expect(tool(cosign, ['generate-key-pair'], work).status).toBe(0);
    const signed = tool(
      cosign,
      ['sign', '--key', path.join(work, 'cosign.key'), '--tlog-upload=false', `${repo}@${digest}`],
      work,
    );
    expect(signed.status, signed.stderr).toBe(0);

    const cosignPub = publicKeyFrom(fs.readFileSync(path.join(work, 'cosign.pub'), 'utf8'));
    const ref = parseReference('from', `${repo}:1.0`);
    const client = await clientFor(ref, access());
    const resolved = await resolveArtifact(client, ref, 'x86_64', cosignPub);
    expect(resolved).toMatchObject({ digest, verifiedDigest: digest });
    await expect(resolveArtifact(client, ref, 'x86_64', publicKeyFrom(keys.publicPem))).rejects.toThrow(
      /^oci check "signature-key" failed/,
    );
    const [file] = await pullLayers(client, resolved.manifest, path.join(dir, 'imgflow-out'));
    expect(fs.readFileSync(file!.path).equals(data)).toBe(true);
    client.close();

    const listed = await listOciRepository(
      {
        subscription: 'interop',
        url: `oci://${repo}`,
        oci: { arch: 'x86_64', keyFile: path.join(work, 'cosign.pub'), ...access() },
      },
      { stateDir: path.join(dir, 'state'), cacheDir: path.join(dir, 'cache') },
    );
    expect(listed.verified).toBe(true);
    expect(listed.list.images).toEqual([
      expect.objectContaining({
        identifier: 'appliance-1.0',
        size: data.length,
        sha512: createHash('sha512').update(data).digest('hex'),
        format: 'qcow2',
      }),
    ]);
  });
});
