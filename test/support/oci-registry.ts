/**
 * The reference distribution registry (Debian's docker-registry) on a free loopback port, with its
 * own config and storage directory, htpasswd basic auth and TLS from a CA made with openssl; and
 * the oras and cosign clients scripts/setup.sh builds into the per-user cache. A missing component
 * fails the test loudly.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';

export const ORAS_VERSION = 'v1.3.6';
export const COSIGN_VERSION = 'v2.6.5';

export interface TestRegistry {
  /** `127.0.0.1:<port>` */
  address: string;
  dir: string;
  storage: string;
  caFile: string;
  credentialsFile: string;
  username: string;
  password: string;
  stop(): Promise<void>;
}

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

function run(argv: string[], cwd: string): string {
  return execFileSync(argv[0]!, argv.slice(1), { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A CA, and a server certificate for 127.0.0.1 and localhost signed by it (EC keys: quick). */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const ca = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca.key');
  const key = path.join(dir, 'server.key');
  const csr = path.join(dir, 'server.csr');
  const cert = path.join(dir, 'server.pem');
  const ext = path.join(dir, 'server.ext');
  run(
    [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      caKey,
      '-out',
      ca,
      '-days',
      '2',
      '-subj',
      '/CN=imgflow test registry CA',
    ],
    dir,
  );
  run(
    [
      'openssl',
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      '/CN=127.0.0.1',
    ],
    dir,
  );
  fs.writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  run(
    [
      'openssl',
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-out',
      cert,
      '-days',
      '2',
      '-extfile',
      ext,
    ],
    dir,
  );
  return { ca, cert, key };
}

export async function startRegistry(dir: string): Promise<TestRegistry> {
  const binary = need('/usr/bin/docker-registry', "Debian's docker-registry");
  need('/usr/bin/htpasswd', 'htpasswd (apache2-utils)');
  fs.mkdirSync(dir, { recursive: true });
  const storage = path.join(dir, 'storage');
  fs.mkdirSync(storage, { recursive: true });
  const certs = makeCerts(dir);
  const username = 'pusher';
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const htpasswd = path.join(dir, 'htpasswd');
  fs.writeFileSync(htpasswd, run(['htpasswd', '-Bbn', username, password], dir));
  const credentialsFile = path.join(dir, 'credentials');
  fs.writeFileSync(credentialsFile, `${username}:${password}\n`, { mode: 0o600 });
  const port = await freePort();
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      '  delete:',
      '    enabled: true',
      '  cache:',
      '    blobdescriptor: ""',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '  tls:',
      `    certificate: ${certs.cert}`,
      `    key: ${certs.key}`,
      'auth:',
      '  htpasswd:',
      '    realm: imgflow-test',
      `    path: ${htpasswd}`,
      '',
    ].join('\n'),
  );
  const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
  const child: ChildProcess = spawn(binary, ['serve', config], { stdio: ['ignore', log, log] });
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(
        `docker-registry exited (${child.exitCode}): ${fs.readFileSync(path.join(dir, 'registry.log'), 'utf8').slice(-500)}`,
      );
    const up = await fetch(`https://${address}/v2/`).then(
      () => true,
      (error: Error & { cause?: { code?: string } }) => error.cause?.code !== 'ECONNREFUSED',
    );
    if (up) break;
    if (Date.now() > deadline) throw new Error(`docker-registry did not listen on ${address} within 20 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    dir,
    storage,
    caFile: certs.ca,
    credentialsFile,
    username,
    password,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** The file the registry stores a blob's bytes in. */
export function blobFile(registry: TestRegistry, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(registry.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}
