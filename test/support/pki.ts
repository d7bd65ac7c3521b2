/**
 * A small PKI for signature tests, made with the real openssl: a trusted CA (with a CRL) in a
 * hashed CA directory, its endorser, a second endorser, a revoked endorser, and an untrusted CA with
 * its own signer, with the openssl commands the product publishes lists with. EC keys keep it fast.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { caConfig, opensslArgv, type Identity } from '../../activities/cloud/publish.js';

export type { Identity };

export interface Pki {
  /** Hashed directory holding the trusted CA and its CRL. */
  caDir: string;
  ca: Identity;
  endorser: Identity;
  otherEndorser: Identity;
  /** A host certificate's kind of name: a `/` inside the CN. */
  hostEndorser: Identity;
  revokedEndorser: Identity;
  wrongCa: Identity;
  wrongCaSigner: Identity;
  /** Signs `body` as multipart/signed S/MIME (detached PKCS#7) and returns the file. */
  sign(body: string, signer: Identity, name: string): string;
}

function openssl(argv: string[], cwd: string): string {
  return execFileSync(argv[0]!, argv.slice(1), { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function makeCa(dir: string, dn: string): Identity {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  fs.writeFileSync(path.join(dir, 'crlnumber'), '01\n');
  const config = path.join(dir, 'ca.cnf');
  fs.writeFileSync(config, caConfig(dir));
  const cert = path.join(dir, 'ca.pem');
  const key = path.join(dir, 'ca.key');
  openssl(opensslArgv.selfSignedCa(config, key, cert, dn), dir);
  return { cert, key, dn, caDn: dn };
}

let serial = 100;

/** `subject` as openssl's -subj takes it (a `/` inside a value escaped); `dn` as openssl prints it, when they differ. */
function makeEndorser(ca: Identity, dir: string, name: string, subject: string, dn = subject): Identity {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.pem`);
  const config = path.join(path.dirname(ca.cert), 'ca.cnf');
  openssl(opensslArgv.request(config, key, csr, subject), dir);
  openssl(opensslArgv.issueEndorser(config, ca, csr, cert, serial++), dir);
  return { cert, key, dn, caDn: ca.dn };
}

function hashOf(kind: 'x509' | 'crl', file: string, cwd: string): string {
  return openssl(opensslArgv.subjectHash(kind, file), cwd).trim();
}

export function createPki(root: string): Pki {
  const caHome = path.join(root, 'ca');
  const ca = makeCa(caHome, '/C=CH/O=imgflow test/CN=imgflow Test CA');
  const wrongCa = makeCa(path.join(root, 'wrong-ca'), '/C=CH/O=imgflow test/CN=imgflow Wrong CA');
  const people = path.join(root, 'people');
  fs.mkdirSync(people, { recursive: true });
  const endorser = makeEndorser(ca, people, 'endorser', '/C=CH/O=imgflow test/OU=endorsers/CN=Image Endorser');
  const otherEndorser = makeEndorser(ca, people, 'other', '/C=CH/O=imgflow test/OU=endorsers/CN=Someone Else');
  const hostEndorser = makeEndorser(
    ca,
    people,
    'host',
    '/C=CH/O=imgflow test/CN=host\\/vmcaster.example.org',
    '/C=CH/O=imgflow test/CN=host/vmcaster.example.org',
  );
  const revokedEndorser = makeEndorser(ca, people, 'revoked', '/C=CH/O=imgflow test/OU=endorsers/CN=Revoked Endorser');
  const wrongCaSigner = makeEndorser(
    wrongCa,
    people,
    'wrong-ca-signer',
    '/C=CH/O=imgflow test/OU=endorsers/CN=Image Endorser',
  );

  const config = path.join(caHome, 'ca.cnf');
  openssl(
    ['openssl', 'ca', '-config', config, '-keyfile', ca.key, '-cert', ca.cert, '-revoke', revokedEndorser.cert],
    caHome,
  );
  const crl = path.join(caHome, 'crl.pem');
  openssl(['openssl', 'ca', '-config', config, '-keyfile', ca.key, '-cert', ca.cert, '-gencrl', '-out', crl], caHome);

  const caDir = path.join(root, 'certificates');
  fs.mkdirSync(caDir, { recursive: true });
  fs.copyFileSync(ca.cert, path.join(caDir, `${hashOf('x509', ca.cert, root)}.0`));
  fs.copyFileSync(crl, path.join(caDir, `${hashOf('crl', crl, root)}.r0`));

  const signed = path.join(root, 'signed');
  fs.mkdirSync(signed, { recursive: true });
  return {
    caDir,
    ca,
    endorser,
    otherEndorser,
    hostEndorser,
    revokedEndorser,
    wrongCa,
    wrongCaSigner,
    sign(body, signer, name) {
      const input = path.join(signed, `${name}.json`);
      const output = path.join(signed, `${name}.smime`);
      fs.writeFileSync(input, body);
      openssl(opensslArgv.sign(input, signer, output), signed);
      return output;
    },
  };
}
