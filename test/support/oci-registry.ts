/**
 * The reference distribution registry (lib/registry-server.ts: Debian's docker-registry on a free
 * loopback port, with its own config and storage directory, htpasswd basic auth and TLS from a CA
 * made with openssl); and the oras and cosign clients scripts/setup.sh builds into the per-user
 * cache, with the environment they need to reach it. A missing component fails the test loudly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startRegistryServer, type RegistryServer } from '../../lib/registry-server.js';

export const ORAS_VERSION = 'v1.3.6';
export const COSIGN_VERSION = 'v2.6.5';

export type TestRegistry = RegistryServer;

function need(file: string, what: string): string {
  if (!fs.existsSync(file)) throw new Error(`${what} is missing: ${file} (run scripts/setup.sh)`);
  return file;
}

export function orasBinary(): string {
  return need(path.join(os.homedir(), '.cache/imgflow', `oras-${ORAS_VERSION}`, 'oras'), `oras ${ORAS_VERSION}`);
}

export function cosignBinary(): string {
  return need(
    path.join(os.homedir(), '.cache/imgflow', `cosign-${COSIGN_VERSION}`, 'cosign'),
    `cosign ${COSIGN_VERSION}`,
  );
}

export function startRegistry(dir: string): Promise<TestRegistry> {
  return startRegistryServer(dir, { realm: 'imgflow-test', validityDays: 2 });
}

/**
 * The environment oras and cosign reach `registry` with, from `dir`: its credentials in a Docker
 * config, its CA through Go's SSL_CERT_FILE, and their own state under `dir`.
 */
export function clientToolsEnv(registry: TestRegistry, dir: string): NodeJS.ProcessEnv {
  const docker = path.join(dir, 'docker');
  fs.mkdirSync(docker, { recursive: true });
  fs.writeFileSync(
    path.join(docker, 'config.json'),
    JSON.stringify({
      auths: {
        [registry.address]: { auth: Buffer.from(`${registry.username}:${registry.password}`).toString('base64') },
      },
    }),
  );
  return {
    PATH: process.env.PATH,
    HOME: dir,
    DOCKER_CONFIG: docker,
    SSL_CERT_FILE: registry.caFile,
    TUF_ROOT: path.join(dir, 'tuf'),
  };
}

/** The file the registry stores a blob's bytes in. */
export function blobFile(registry: TestRegistry, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(registry.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

/** The requests for blob `digest` of `repository` in the registry's access log so far (GET and HEAD). */
export function blobRequests(registry: TestRegistry, repository: string, digest: string): string[] {
  const wanted = ` /v2/${repository}/blobs/${digest} `;
  return fs
    .readFileSync(registry.logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(wanted));
}
