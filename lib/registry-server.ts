/**
 * The reference distribution registry (Debian's docker-registry) on a loopback port, in a directory
 * of its own: its config, its storage, htpasswd basic auth and TLS from a CA made with openssl. The
 * demo pushes to it and the tests push through it. Certificates and credentials are made once per
 * directory and kept (a certificate that expires within a day is made again), so a registry
 * started again on the same directory serves the same blobs to the same clients; a registry this
 * directory's earlier owner left running (its pid recorded, its command line naming this config)
 * is ended first.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { processRunning } from './processes.js';

const execFileAsync = promisify(execFile);

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

export interface RegistryServer {
  /** `127.0.0.1:<port>` */
  address: string;
  port: number;
  dir: string;
  storage: string;
  /** The PEM of the CA that signed the registry's certificate: what clients trust. */
  caFile: string;
  /** `user:password`, one line, mode 600. */
  credentialsFile: string;
  username: string;
  password: string;
  /** The registry's stdout and stderr: its access log (one line per request) and its errors. */
  logFile: string;
  stop(): Promise<void>;
}

export interface RegistryServerOptions {
  /** The port to listen on; a free one when absent. */
  port?: number;
  /** How long a certificate made now is valid. */
  validityDays?: number;
  realm?: string;
  /** How long to wait for it to listen. */
  startTimeoutMs?: number;
}

function need(file: string, what: string): string {
  if (!fs.existsSync(file)) throw new Error(`${what} is missing: ${file} (run scripts/setup.sh)`);
  return file;
}

async function run(argv: string[], cwd: string): Promise<string> {
  const { stdout } = await execFileAsync(argv[0]!, argv.slice(1), { cwd, encoding: 'utf8' });
  return stdout;
}

/** A TCP port on loopback that nothing listens on right now. */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether nothing listens on `port` of 127.0.0.1 right now. */
export async function loopbackPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A CA, and a server certificate for 127.0.0.1 and localhost signed by it (EC keys: quick); kept while valid. */
async function ensureCerts(dir: string, days: number): Promise<{ ca: string; cert: string; key: string }> {
  const ca = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca.key');
  const key = path.join(dir, 'server.key');
  const csr = path.join(dir, 'server.csr');
  const cert = path.join(dir, 'server.pem');
  const ext = path.join(dir, 'server.ext');
  if ([ca, key, cert].every((f) => fs.existsSync(f))) {
    const valid = await run(['openssl', 'x509', '-checkend', '86400', '-noout', '-in', cert], dir).then(
      () => true,
      () => false,
    );
    if (valid) return { ca, cert, key };
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run(
    ['openssl', 'req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', String(days)].concat([
      '-subj',
      '/CN=imgflow loopback registry CA',
    ]),
    dir,
  );
  await run(['openssl', 'req', '-new', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1'], dir);
  fs.writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await run(
    ['openssl', 'x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert].concat([
      '-days',
      String(days),
      '-extfile',
      ext,
    ]),
    dir,
  );
  return { ca, cert, key };
}

/** A user and password for basic auth, with its htpasswd entry; kept once made. */
async function ensureCredentials(
  dir: string,
): Promise<{ username: string; password: string; htpasswd: string; credentialsFile: string }> {
  const credentialsFile = path.join(dir, 'credentials');
  const htpasswd = path.join(dir, 'htpasswd');
  if (!fs.existsSync(credentialsFile)) {
    const partial = `${credentialsFile}.partial`;
    fs.writeFileSync(partial, `pusher:pw-${randomBytes(12).toString('hex')}\n`, { mode: 0o600 });
    fs.renameSync(partial, credentialsFile);
    fs.rmSync(htpasswd, { force: true });
  }
  const line = fs.readFileSync(credentialsFile, 'utf8').split('\n')[0]!;
  const colon = line.indexOf(':');
  const username = line.slice(0, colon);
  const password = line.slice(colon + 1);
  if (!fs.existsSync(htpasswd)) fs.writeFileSync(htpasswd, await run(['htpasswd', '-Bbn', username, password], dir));
  return { username, password, htpasswd, credentialsFile };
}

/** Ends the registry an earlier owner of `dir` left running: only a pid whose command line names this config. */
async function endLeftover(pidFile: string, config: string): Promise<void> {
  const pid = Number(fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8').trim() : NaN);
  if (!Number.isInteger(pid) || pid <= 1 || !processRunning(pid)) return;
  const cmdline = fs.existsSync(`/proc/${pid}/cmdline`) ? fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
  if (!cmdline.split('\0').includes(config)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && processRunning(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

export async function startRegistryServer(dir: string, options: RegistryServerOptions = {}): Promise<RegistryServer> {
  const binary = need(REGISTRY_BINARY, "Debian's docker-registry");
  need('/usr/bin/htpasswd', 'htpasswd (apache2-utils)');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const storage = path.join(dir, 'storage');
  fs.mkdirSync(storage, { recursive: true });
  const config = path.join(dir, 'config.yml');
  const pidFile = path.join(dir, 'registry.pid');
  await endLeftover(pidFile, config);
  const certs = await ensureCerts(dir, options.validityDays ?? 2);
  const { username, password, htpasswd, credentialsFile } = await ensureCredentials(dir);
  const port = options.port ?? (await freeLoopbackPort());
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
      `    realm: ${options.realm ?? 'imgflow'}`,
      `    path: ${htpasswd}`,
      '',
    ].join('\n'),
  );
  const logFile = path.join(dir, 'registry.log');
  const log = fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn(binary, ['serve', config], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  if (child.pid) fs.writeFileSync(pidFile, `${child.pid}\n`);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(pidFile, { force: true });
  };
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(
        `docker-registry exited (${child.exitCode}) on ${address}: ${fs.readFileSync(logFile, 'utf8').slice(-500)}`,
      );
    const up = await fetch(`https://${address}/v2/`).then(
      () => true,
      (error: Error & { cause?: { code?: string } }) => error.cause?.code !== 'ECONNREFUSED',
    );
    if (up) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not listen on ${address} within ${options.startTimeoutMs ?? 20_000} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    port,
    dir,
    storage,
    caFile: certs.ca,
    credentialsFile,
    username,
    password,
    logFile,
    stop,
  };
}
