/**
 * The cluster's certificates, made with openssl (argv, no shell) for a site that has none:
 * - the cluster CA, which signs the frontend's server certificate and one client certificate per
 *   host or role (the host in the CN); the frontend accepts only clients this CA signed;
 * - a separate internode CA and certificate that only the Temporal services hold, so that a host's
 *   client certificate cannot reach history, matching or the internal frontend directly.
 * A site with its own CA gives its CA and the frontend's certificate and key instead; imgflow then
 * makes only the internode pair and leaves client certificates to the site.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { checkHost, InputError } from '../../common/names.js';

export interface CertPair {
  cert: string;
  key: string;
}

export interface ClusterPki {
  dir: string;
  /** The CA clients' certificates must come from; clients trust it for the frontend too. */
  caCert: string;
  /** The CA's key: absent when the site brought its own CA. */
  caKey?: string;
  frontend: CertPair;
  internode: CertPair & { caCert: string };
}

/** Files a site gives when it has its own CA. */
export interface SiteCertificates {
  caPath: string;
  certPath: string;
  keyPath: string;
}

/**
 * The name clients check in the frontend's certificate, whatever address they dial (loopback, a
 * bridge address): TLS clients may not send an IP address as the server name.
 */
export const FRONTEND_TLS_NAME = 'temporal-frontend';

const CA_DAYS = 3650;
const CERT_DAYS = 825;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKey(file: string, cwd: string): void {
  if (fs.existsSync(file)) return;
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], cwd);
  fs.chmodSync(file, 0o600);
}

function makeCa(dir: string, name: string, cn: string): CertPair {
  const pair = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  if (fs.existsSync(pair.cert) && fs.existsSync(pair.key)) return pair;
  newKey(pair.key, dir);
  const ext = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      pair.key,
      '-subj',
      `/O=imgflow/CN=${cn}`,
      '-days',
      String(CA_DAYS),
      ...ext,
      '-out',
      pair.cert,
    ],
    dir,
  );
  return pair;
}

export interface CertRequest {
  cn: string;
  /** DNS names and IP addresses the certificate is valid for (server certificates). */
  sans?: string[];
  usage: 'server' | 'client' | 'both';
  /** Negative days make a certificate that has already expired (for tests of refusal). */
  days?: number;
}

const IP = /^(\d{1,3}\.){3}\d{1,3}$|:/;
const EKU = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' };

/** Issues `name.pem`/`name.key` in `dir` signed by `ca`, unless they are there already. */
export function issueCert(ca: CertPair, dir: string, name: string, req: CertRequest): CertPair {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pair = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  if (fs.existsSync(pair.cert) && fs.existsSync(pair.key)) return pair;
  newKey(pair.key, dir);
  const csr = path.join(dir, `${name}.csr`);
  const extFile = path.join(dir, `${name}.ext`);
  const sans = (req.sans ?? []).map((s) => (IP.test(s) ? `IP:${s}` : `DNS:${s}`));
  fs.writeFileSync(
    extFile,
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${EKU[req.usage]}`,
      ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : []),
    ].join('\n'),
  );
  openssl(['req', '-new', '-key', pair.key, '-subj', `/O=imgflow/CN=${req.cn}`, '-out', csr], dir);
  const days = String(req.days ?? CERT_DAYS);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-days',
      days,
      '-extfile',
      extFile,
      '-out',
      pair.cert,
    ],
    dir,
  );
  fs.rmSync(csr);
  fs.rmSync(extFile);
  return pair;
}

/** Makes (or finds) the cluster's certificates under `dir`; `sans` are the frontend's addresses. */
export function ensurePki(dir: string, o: { sans: string[]; site?: SiteCertificates }): ClusterPki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const internodeCa = makeCa(dir, 'internode-ca', 'imgflow internode CA');
  const internode = issueCert(internodeCa, dir, 'internode', {
    cn: 'internode',
    sans: ['localhost', '127.0.0.1'],
    usage: 'both',
  });
  if (o.site) {
    for (const [field, file] of Object.entries({
      '--tls-ca': o.site.caPath,
      '--tls-server-cert': o.site.certPath,
      '--tls-server-key': o.site.keyPath,
    })) {
      if (!fs.existsSync(file)) throw new InputError(field, 'an existing PEM file', file);
    }
    return {
      dir,
      caCert: o.site.caPath,
      frontend: { cert: o.site.certPath, key: o.site.keyPath },
      internode: { ...internode, caCert: internodeCa.cert },
    };
  }
  const ca = makeCa(dir, 'ca', 'imgflow cluster CA');
  const sans = [...new Set([FRONTEND_TLS_NAME, 'localhost', ...o.sans])];
  // A frontend given new addresses gets a new certificate naming them all.
  const sansFile = path.join(dir, 'frontend.sans');
  if (fs.existsSync(sansFile) && fs.readFileSync(sansFile, 'utf8') !== sans.join(',')) {
    for (const ext of ['pem', 'key']) fs.rmSync(path.join(dir, `frontend.${ext}`), { force: true });
  }
  const frontend = issueCert(ca, dir, 'frontend', { cn: 'frontend', sans, usage: 'server' });
  fs.writeFileSync(sansFile, sans.join(','));
  return { dir, caCert: ca.cert, caKey: ca.key, frontend, internode: { ...internode, caCert: internodeCa.cert } };
}

/** A client certificate for a host or role (`clients/<name>.pem`), its name in the CN. */
export function issueClientCert(pki: ClusterPki, name: string, days?: number): CertPair {
  checkHost('client name', name);
  if (!pki.caKey)
    throw new InputError(
      'client name',
      "a site CA's client certificate: this cluster uses the site's own CA, which issues them",
    );
  return issueCert({ cert: pki.caCert, key: pki.caKey }, path.join(pki.dir, 'clients'), name, {
    cn: name,
    usage: 'client',
    ...(days !== undefined ? { days } : {}),
  });
}
