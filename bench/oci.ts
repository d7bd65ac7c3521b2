/**
 * Push and pull of a 1 GiB image through the reference registry (TLS, basic auth, on loopback),
 * imgflow against `oras` doing the same, alternating for a few rounds; then an unchanged
 * repository polled as a subscription does, and its image "downloaded" again: zero layer bytes.
 *
 * imgflow's push reads the file once, hashing it (sha256 and sha512) as it uploads under the
 * version's recorded digest, puts the manifest and signs; oras pushes the same file unsigned. Each round pushes to a
 * new repository, so neither finds the blob linked already (the registry still receives every byte).
 *
 *   npm run bench -- bench/oci.ts [MiB] [rounds]
 */
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateSigningKey } from '../activities/oci/cosign.js';
import { listOciRepository, pullOciImage } from '../activities/oci/source.js';
import { clientFor, pullLayers, pushVersion, resolveArtifact } from '../activities/oci/transfer.js';
import { checkInt } from '../common/names.js';
import { parseReference } from '../common/oci.js';
import { clientToolsEnv, orasBinary, startRegistry } from '../test/support/oci-registry.js';

const mib = checkInt('MiB', process.argv[2] ?? '1024', 1, 65536);
const rounds = checkInt('rounds', process.argv[3] ?? '3', 1, 20);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgflow-bench-oci-'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rate = (s: number) => `${(mib / s).toFixed(0)} MiB/s`;

async function main(): Promise<void> {
  const oras = orasBinary();
  const registry = await startRegistry(path.join(dir, 'registry'));
  try {
    const file = path.join(dir, 'image.qcow2');
    const block = Buffer.alloc(1024 * 1024);
    const out = fs.openSync(file, 'w');
    const sha256 = createHash('sha256');
    for (let i = 0; i < mib; i++) {
      for (let j = 0; j < block.length; j += 4) block.writeUInt32LE((i * 2654435761 + j * 40503) >>> 0, j);
      fs.writeSync(out, block);
      sha256.update(block);
    }
    fs.closeSync(out);
    const record = { format: 'qcow2' as const, path: file, sha256: sha256.digest('hex'), bytes: mib * 1024 * 1024 };
    const keys = generateSigningKey();
    const key = createPrivateKey(keys.privatePem);
    const env = clientToolsEnv(registry, dir);
    const access = { credentialsFile: registry.credentialsFile, caFile: registry.caFile };
    const version = {
      image: 'bench',
      version: 'v1',
      arch: 'x86_64',
      os: 'debian-12',
      createdAt: '2026-12-01T00:00:00Z',
      by: 'bench',
      message: 'bench',
      recipeDigest: '0'.repeat(64),
      provenance: { builder: 'b', source: 's', tools: {}, workflowId: 'w' },
    };
    const times = {
      imgflowPush: [] as number[],
      orasPush: [] as number[],
      imgflowPull: [] as number[],
      orasPull: [] as number[],
    };
    const timed = async (fn: () => unknown) => {
      const start = process.hrtime.bigint();
      await fn();
      return Number(process.hrtime.bigint() - start) / 1e9;
    };
    const oras1 = (args: string[], cwd = dir) => {
      const r = spawnSync(oras, args, { cwd, env, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`oras ${args[0]} failed: ${r.stderr.trim()}`);
    };
    for (let r = 0; r < rounds; r++) {
      const ref = parseReference('to', `${registry.address}/bench/imgflow-${r}:v1`);
      const client = await clientFor(ref, access);
      times.imgflowPush.push(await timed(() => pushVersion(client, ref, version, [record], key)));
      times.orasPush.push(
        await timed(() =>
          oras1([
            'push',
            `${registry.address}/bench/oras-${r}:v1`,
            'image.qcow2:application/vnd.imgflow.image.layer.v1.qcow2',
          ]),
        ),
      );
      const resolved = await resolveArtifact(client, ref, 'x86_64', undefined);
      times.imgflowPull.push(
        await timed(() => pullLayers(client, resolved.manifest, path.join(dir, `pull-imgflow-${r}`))),
      );
      times.orasPull.push(
        await timed(() =>
          oras1(['pull', '-o', path.join(dir, `pull-oras-${r}`), `${registry.address}/bench/oras-${r}:v1`]),
        ),
      );
      client.close();
      fs.rmSync(path.join(dir, `pull-imgflow-${r}`), { recursive: true, force: true });
      fs.rmSync(path.join(dir, `pull-oras-${r}`), { recursive: true, force: true });
      console.log(
        `round ${r + 1}: push imgflow ${times.imgflowPush[r]!.toFixed(2)} s, oras ${times.orasPush[r]!.toFixed(2)} s; pull imgflow ${times.imgflowPull[r]!.toFixed(2)} s, oras ${times.orasPull[r]!.toFixed(2)} s`,
      );
    }
    const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)])) as Record<
      keyof typeof times,
      number
    >;
    console.log(
      `${mib} MiB, median of ${rounds}: push imgflow ${m.imgflowPush.toFixed(2)} s (${rate(m.imgflowPush)}, hashed, signed) vs oras ${m.orasPush.toFixed(2)} s (${rate(m.orasPush)}, unsigned): ratio ${(m.orasPush / m.imgflowPush).toFixed(2)}`,
    );
    console.log(
      `${mib} MiB, median of ${rounds}: pull imgflow ${m.imgflowPull.toFixed(2)} s (${rate(m.imgflowPull)}, sha256 and sha512 checked) vs oras ${m.orasPull.toFixed(2)} s (${rate(m.orasPull)}): ratio ${(m.orasPull / m.imgflowPull).toFixed(2)}`,
    );

    // An unchanged repository, polled twice as a subscription: the second poll and download move no layer byte.
    fs.writeFileSync(path.join(dir, 'site.pub'), keys.publicPem);
    const deps = { stateDir: path.join(dir, 'state'), cacheDir: path.join(dir, 'cache') };
    const input = {
      subscription: 'bench',
      url: `oci://${registry.address}/bench/imgflow-0`,
      oci: { arch: 'x86_64', keyFile: path.join(dir, 'site.pub'), ...access },
    };
    const first = await listOciRepository(input, deps);
    const firstPull = await pullOciImage({ image: first.list.images[0]!, oci: input.oci }, deps);
    let second: Awaited<ReturnType<typeof listOciRepository>> | undefined;
    const pollSeconds = await timed(async () => (second = await listOciRepository(input, deps)));
    const secondPull = await pullOciImage({ image: second!.list.images[0]!, oci: input.oci }, deps);
    console.log(
      `unchanged repository: poll ${(pollSeconds * 1000).toFixed(0)} ms (tags, manifest, signature verified), list version ${first.list.version} == ${second!.list.version}: ${first.list.version === second!.list.version}; first download ${firstPull.bytes} bytes, second ${secondPull.cached ? 'from the cache: 0 layer bytes' : `${secondPull.bytes} bytes`}`,
    );
  } finally {
    await registry.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(`bench/oci: ${(error as Error).message}`);
  process.exit(1);
});
