/**
 * Push, sign, verify and pull against the real distribution registry (TLS, htpasswd), and each
 * refusal of bad input naming its check.
 */
import { createHash, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A, ARTIFACT_TYPE, LAYER_TYPES } from '../../activities/oci/artifact.js';
import {
  generateSigningKey,
  publicKeyFrom,
  signatureTag,
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING,
} from '../../activities/oci/cosign.js';
import { parseReference } from '../../common/oci.js';
import { digestOf, MEDIA } from '../../activities/oci/registry.js';
import { clientFor, pullLayers, pushVersion, resolveArtifact, type PushFile } from '../../activities/oci/transfer.js';
import { tempDir } from '../support/dirs.js';
import { blobFile, startRegistry, type TestRegistry } from '../support/oci-registry.js';
import { freePort } from '../support/ports.js';

const dir = tempDir('imgflow-oci-');
let registry: TestRegistry;
const keys = generateSigningKey();
const other = generateSigningKey();
const privateKey = createPrivateKey(keys.privatePem);
const publicKey = publicKeyFrom(keys.publicPem);

const version = {
  image: 'debian-node',
  version: 'v3',
  arch: 'x86_64',
  os: 'debian-12',
  createdAt: '2026-12-01T10:00:00.000Z',
  by: 'alice',
  message: 'node image with slurm 24',
  recipeDigest: 'ab'.repeat(32),
  provenance: {
    builder: 'builder-0',
    source: 'recipes/node.yaml',
    tools: { debootstrap: '1.0.128' },
    workflowId: 'build-debian-node-1',
  },
};

function makeFile(name: string, bytes: number, seed: number): PushFile & { sha512: string } {
  const file = path.join(dir, name);
  const data = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4096) data.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  fs.writeFileSync(file, data);
  return {
    format: name.endsWith('.qcow2') ? 'qcow2' : name.endsWith('.squashfs') ? 'squashfs' : 'raw',
    path: file,
    sha256: createHash('sha256').update(data).digest('hex'),
    sha512: createHash('sha512').update(data).digest('hex'),
    bytes,
  };
}

const access = () => ({ credentialsFile: registry.credentialsFile, caFile: registry.caFile });

beforeAll(async () => {
  registry = await startRegistry(path.join(dir, 'registry'));
});
afterAll(async () => {
  await registry?.stop();
});

describe('push', () => {
  it('pushes a version with its annotations and a cosign signature; a second push uploads nothing', async () => {
    const disk = makeFile('disk.qcow2', 3 * 1024 * 1024 + 17, 1);
    const squash = makeFile('root.squashfs', 1024 * 1024, 2);
    const ref = parseReference('to', `${registry.address}/sites/debian-node:v3`);
    const client = await clientFor(ref, access());
    const first = await pushVersion(client, ref, version, [disk, squash], privateKey);
    expect(first).toMatchObject({
      uploadedBlobs: 3,
      uploadedBytes: disk.bytes + squash.bytes,
      manifestPut: true,
      signed: true,
      signatureTag: signatureTag(first.digest),
    });
    const again = await pushVersion(await clientFor(ref, access()), ref, version, [disk, squash], privateKey);
    expect(again).toEqual({ ...first, uploadedBlobs: 0, uploadedBytes: 0, manifestPut: false, signed: false });

    const manifest = (await client.getManifest('v3'))!;
    expect(manifest.digest).toBe(first.digest);
    const json = manifest.json as {
      artifactType: string;
      annotations: Record<string, string>;
      layers: { mediaType: string; digest: string; annotations: Record<string, string> }[];
    };
    expect(json.artifactType).toBe(ARTIFACT_TYPE);
    expect(json.annotations).toMatchObject({
      [A.image]: 'debian-node',
      [A.imageVersion]: 'v3',
      [A.arch]: 'x86_64',
      [A.glanceArch]: 'x86_64',
      [A.glanceOsDistro]: 'debian',
      [A.glanceOsVersion]: '12',
      [A.bytes]: String(disk.bytes + squash.bytes),
    });
    expect(JSON.parse(json.annotations[A.provenance]!)).toEqual(version.provenance);
    expect(json.layers.map((l) => l.mediaType)).toEqual([LAYER_TYPES.qcow2, LAYER_TYPES.squashfs]);
    expect(json.layers[0]!.annotations).toMatchObject({
      [A.title]: 'debian-node-v3.qcow2',
      [A.sha512]: disk.sha512,
      [A.glanceHashValue]: disk.sha512,
      [A.glanceDiskFormat]: 'qcow2',
      [A.sha256]: disk.sha256,
    });
    const sig = (await client.getManifest(signatureTag(first.digest)))!.json as {
      layers: { mediaType: string; annotations: Record<string, string> }[];
    };
    expect(sig.layers).toHaveLength(1);
    expect(sig.layers[0]!.mediaType).toBe(SIMPLE_SIGNING);
    expect(sig.layers[0]!.annotations[SIGNATURE_ANNOTATION]).toMatch(/^[A-Za-z0-9+/=]+$/);
  });

  it('refuses a file whose bytes are not the version recorded, pushing nothing', async () => {
    const disk = makeFile('changed.qcow2', 4096, 3);
    fs.appendFileSync(disk.path, 'x');
    const ref = parseReference('to', `${registry.address}/sites/changed:v1`);
    await expect(pushVersion(await clientFor(ref, access()), ref, version, [disk], privateKey)).rejects.toThrow(
      /^oci check "digest" failed: .*changed.qcow2 is sha256:/,
    );
    expect(await (await clientFor(ref, access())).listTags()).toEqual([]);
  });

  it('refuses a file changed in place (the size recorded, other bytes) as it uploads, the registry keeping nothing under the digest', async () => {
    const disk = makeFile('flipped.raw', 64 * 1024, 5);
    const fd = fs.openSync(disk.path, 'r+');
    fs.writeSync(fd, Buffer.from('changed'), 0, 7, 1000);
    fs.closeSync(fd);
    const ref = parseReference('to', `${registry.address}/sites/flipped:v1`);
    await expect(pushVersion(await clientFor(ref, access()), ref, version, [disk], privateKey)).rejects.toThrow(
      new RegExp(
        `^oci check "digest" failed: .*flipped\\.raw is sha256:[0-9a-f]{64} \\(65536 bytes\\), the version recorded sha256:${disk.sha256} \\(65536 bytes\\)$`,
      ),
    );
    expect(await (await clientFor(ref, access())).listTags()).toEqual([]);
    expect(fs.existsSync(blobFile(registry, `sha256:${disk.sha256}`))).toBe(false);
  });
});

describe('verify and pull', () => {
  let pushed: { digest: string; disk: PushFile & { sha512: string } };
  beforeAll(async () => {
    const disk = makeFile('pull.qcow2', 2 * 1024 * 1024, 4);
    const ref = parseReference('to', `${registry.address}/sites/pull:v1`);
    pushed = {
      digest: (
        await pushVersion(
          await clientFor(ref, access()),
          ref,
          { ...version, image: 'pull', version: 'v1' },
          [disk],
          privateKey,
        )
      ).digest,
      disk,
    };
  });

  it('resolves the tag, verifies the signature, pulls the disk; a second pull transfers nothing', async () => {
    const ref = parseReference('from', `${registry.address}/sites/pull:v1`);
    const client = await clientFor(ref, access());
    const resolved = await resolveArtifact(client, ref, 'x86_64', publicKey);
    expect(resolved).toMatchObject({
      digest: pushed.digest,
      manifestDigest: pushed.digest,
      verifiedDigest: pushed.digest,
    });
    const files = await pullLayers(client, resolved.manifest, path.join(dir, 'pulled'));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatchObject({
      name: 'pull-v1.qcow2',
      format: 'qcow2',
      sha512: pushed.disk.sha512,
      bytes: pushed.disk.bytes,
      cached: false,
      transferred: pushed.disk.bytes,
    });
    expect(fs.readFileSync(files[0]!.path).equals(fs.readFileSync(pushed.disk.path))).toBe(true);
    const again = await pullLayers(client, resolved.manifest, path.join(dir, 'pulled'));
    expect(again[0]).toMatchObject({ cached: true, transferred: 0 });
  });

  it('resumes an interrupted layer download with a Range request', async () => {
    const ref = parseReference('from', `${registry.address}/sites/pull:v1`);
    const client = await clientFor(ref, access());
    const resolved = await resolveArtifact(client, ref, 'x86_64', publicKey);
    const layer = resolved.manifest.layers[0]!;
    const into = path.join(dir, 'resume');
    fs.mkdirSync(into, { recursive: true });
    const target = path.join(into, layer.digest.replace(':', '-'));
    fs.writeFileSync(`${target}.partial`, fs.readFileSync(pushed.disk.path).subarray(0, 700_000));
    const [file] = await pullLayers(client, resolved.manifest, into);
    expect(file).toMatchObject({
      resumedAt: [700_000],
      transferred: pushed.disk.bytes - 700_000,
      sha512: pushed.disk.sha512,
    });
  });

  it('refuses an unsigned artifact', async () => {
    const ref = parseReference('to', `${registry.address}/sites/unsigned:v1`);
    const client = await clientFor(ref, access());
    const layer = Buffer.from('unsigned disk');
    await client.pushBlob(digestOf(layer), layer.length, layer);
    await client.pushBlob(digestOf('{}'), 2, Buffer.from('{}'));
    const manifest = {
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf('{}'), size: 2 },
      layers: [{ mediaType: LAYER_TYPES.raw, digest: digestOf(layer), size: layer.length }],
    };
    await client.putManifest('v1', Buffer.from(JSON.stringify(manifest)), MEDIA.ociManifest);
    await expect(resolveArtifact(client, ref, 'x86_64', publicKey)).rejects.toThrow(
      /^oci check "signature" failed: sites\/unsigned@sha256:[0-9a-f]{64} is not signed \(no sha256-[0-9a-f]{64}\.sig\)$/,
    );
  });

  it('refuses a signature by another key', async () => {
    const ref = parseReference('from', `${registry.address}/sites/pull:v1`);
    await expect(
      resolveArtifact(await clientFor(ref, access()), ref, 'x86_64', publicKeyFrom(other.publicPem)),
    ).rejects.toThrow(
      /^oci check "signature-key" failed: none of the 1 signatures of sites\/pull@sha256:\w+ is by the given key$/,
    );
  });

  it('refuses a tampered layer, keeping nothing of it', async () => {
    const disk = makeFile('tamper.qcow2', 512 * 1024, 5);
    const ref = parseReference('to', `${registry.address}/sites/tamper:v1`);
    const client = await clientFor(ref, access());
    await pushVersion(client, ref, { ...version, image: 'tamper', version: 'v1' }, [disk], privateKey);
    const stored = blobFile(registry, `sha256:${disk.sha256}`);
    const bytes = fs.readFileSync(stored);
    bytes[1000] = bytes[1000]! ^ 0xff;
    fs.writeFileSync(stored, bytes);
    const resolved = await resolveArtifact(client, ref, 'x86_64', publicKey);
    const into = path.join(dir, 'tampered');
    await expect(pullLayers(client, resolved.manifest, into)).rejects.toThrow(
      new RegExp(`^oci check "digest" failed: blob sha256:${disk.sha256} downloaded as sha256:`),
    );
    expect(fs.readdirSync(into)).toEqual([]);
  });

  it('picks the subscription arch from an index of several platforms, or refuses', async () => {
    const ref = parseReference('to', `${registry.address}/sites/multi:v1`);
    const client = await clientFor(ref, access());
    const amd = makeFile('amd.qcow2', 64 * 1024, 6);
    const arm = makeFile('arm.qcow2', 64 * 1024, 7);
    const a = await pushVersion(client, { ...ref, tag: 'amd64' }, version, [amd], privateKey);
    const b = await pushVersion(client, { ...ref, tag: 'arm64' }, { ...version, arch: 'aarch64' }, [arm], privateKey);
    const size = (digest: string) => client.getManifest(digest).then((m) => m!.body.length);
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: [
        {
          mediaType: MEDIA.ociManifest,
          digest: a.digest,
          size: await size(a.digest),
          platform: { architecture: 'amd64', os: 'linux' },
        },
        {
          mediaType: MEDIA.ociManifest,
          digest: b.digest,
          size: await size(b.digest),
          platform: { architecture: 'arm64', os: 'linux' },
        },
      ],
    };
    await client.putManifest('v1', Buffer.from(JSON.stringify(index)), MEDIA.ociIndex);
    const picked = await resolveArtifact(client, ref, 'aarch64', publicKey);
    expect(picked).toMatchObject({ manifestDigest: b.digest, verifiedDigest: b.digest });
    await expect(resolveArtifact(client, ref, 'ppc64le', publicKey)).rejects.toThrow(
      /^oci check "platform" failed: .*multi:v1 is an index of 2 manifests \(linux\/amd64, linux\/arm64\): none is for linux\/ppc64le$/,
    );
  });

  it('refuses a manifest of an unknown media type', async () => {
    // The distribution registry refuses to store such a manifest; a registry that serves one anyway:
    const fake = await fakeRegistry((req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.example.thing+json' });
      res.end(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example.thing+json', layers: [] }));
    });
    const fakeRef = parseReference('from', `${fake.address}/sites/oddtype:v1`);
    await expect(
      resolveArtifact(await clientFor(fakeRef, { plainHttp: true }), fakeRef, 'x86_64', publicKey),
    ).rejects.toThrow(
      /^oci check "media-type" failed: manifest v1 is application\/vnd\.example\.thing\+json, not an OCI or Docker v2 manifest or index$/,
    );
    await fake.close();
  });

  it('refuses wrong credentials (401) and a repository or tag the registry lacks (404)', async () => {
    const ref = parseReference('from', `${registry.address}/sites/pull:v1`);
    const wrong = path.join(dir, 'wrong-credentials');
    fs.writeFileSync(wrong, `${registry.username}:nope\n`);
    await expect(
      resolveArtifact(
        await clientFor(ref, { credentialsFile: wrong, caFile: registry.caFile }),
        ref,
        'x86_64',
        publicKey,
      ),
    ).rejects.toThrow(
      /^oci check "auth" failed: GET \/v2\/sites\/pull\/manifests\/v1: the registry answered 401 to the credentials given$/,
    );
    await expect(
      resolveArtifact(await clientFor(ref, { caFile: registry.caFile }), ref, 'x86_64', publicKey),
    ).rejects.toThrow(/^oci check "auth" failed: .*401 and no credentials were given$/);
    const missing = parseReference('from', `${registry.address}/sites/pull:v9`);
    await expect(resolveArtifact(await clientFor(missing, access()), missing, 'x86_64', publicKey)).rejects.toThrow(
      /^oci check "not-found" failed: GET \/v2\/sites\/pull\/manifests\/v9: the registry answered 404 MANIFEST_UNKNOWN$/,
    );
  });

  it('answers a Bearer challenge with a token from the realm, sending the credentials there only', async () => {
    const seen: string[] = [];
    let address = '';
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: 'x', digest: digestOf('{}'), size: 2 },
      layers: [],
    });
    const fake = await fakeRegistry((req, res) => {
      seen.push(`${req.url} ${req.headers.authorization ?? '-'}`);
      if (req.url!.startsWith('/token?')) {
        const ok = req.headers.authorization === `Basic ${Buffer.from('bob:pw').toString('base64')}`;
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(ok ? '{"token":"t0k"}' : '{}');
      } else if (req.headers.authorization !== 'Bearer t0k') {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${address}/token",service="fake",scope="repository:sites/x:pull"`,
        });
        res.end();
      } else {
        res.writeHead(200, { 'content-type': MEDIA.ociManifest });
        res.end(body);
      }
    });
    address = fake.address;
    const creds = path.join(dir, 'bearer-credentials');
    fs.writeFileSync(creds, 'bob:pw\n');
    const client = await clientFor(parseReference('from', `${fake.address}/sites/x:v1`), {
      plainHttp: true,
      credentialsFile: creds,
    });
    expect((await client.getManifest('v1'))!.digest).toBe(digestOf(body));
    expect(seen).toEqual([
      '/v2/sites/x/manifests/v1 -',
      `/token?service=fake&scope=${encodeURIComponent('repository:sites/x:pull')} Basic ${Buffer.from('bob:pw').toString('base64')}`,
      '/v2/sites/x/manifests/v1 Bearer t0k',
    ]);
    client.close();
    await fake.close();
  });

  it('refuses a registry that answers 500 after its retries, or stalls', async () => {
    let calls = 0;
    const failing = await fakeRegistry((req, res) => {
      calls++;
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNKNOWN"}]}');
    });
    const ref = parseReference('from', `${failing.address}/sites/x:v1`);
    await expect(
      resolveArtifact(
        await clientFor(ref, { plainHttp: true }, { retries: 2, retryDelayMs: 10 }),
        ref,
        'x86_64',
        publicKey,
      ),
    ).rejects.toThrow(
      /^oci check "registry" failed: GET \/v2\/sites\/x\/manifests\/v1: the registry answered 500 UNKNOWN$/,
    );
    expect(calls).toBe(3);
    await failing.close();
    const stalling = await fakeRegistry(() => undefined);
    const stalled = parseReference('from', `${stalling.address}/sites/x:v1`);
    const started = Date.now();
    await expect(
      resolveArtifact(
        await clientFor(stalled, { plainHttp: true }, { retries: 1, retryDelayMs: 10, stallTimeoutMs: 300 }),
        stalled,
        'x86_64',
        publicKey,
      ),
    ).rejects.toThrow(/^oci check "stalled" failed: GET \/v2\/sites\/x\/manifests\/v1: no answer for 300 ms$/);
    expect(Date.now() - started).toBeLessThan(5000);
    await stalling.close();
  });

  it('refuses a manifest whose bytes are not the digest asked for or announced', async () => {
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: 'x', digest: digestOf('{}'), size: 2 },
      layers: [],
    });
    const lying = await fakeRegistry((req, res) => {
      res.writeHead(200, { 'content-type': MEDIA.ociManifest, 'docker-content-digest': `sha256:${'0'.repeat(64)}` });
      res.end(body);
    });
    const ref = parseReference('from', `${lying.address}/sites/x:v1`);
    await expect(resolveArtifact(await clientFor(ref, { plainHttp: true }), ref, 'x86_64', publicKey)).rejects.toThrow(
      /^oci check "digest" failed: the registry says manifest v1 is sha256:0{64}, its bytes are sha256:/,
    );
    const byDigest = parseReference('from', `${lying.address}/sites/x@sha256:${'1'.repeat(64)}`);
    await expect(
      resolveArtifact(await clientFor(byDigest, { plainHttp: true }), byDigest, 'x86_64', publicKey),
    ).rejects.toThrow(/^oci check "digest" failed: manifest sha256:1{64} has digest sha256:/);
    await lying.close();
  });
});

async function fakeRegistry(
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<{ address: string; close(): Promise<void> }> {
  const port = await freePort();
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
