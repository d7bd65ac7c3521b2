/**
 * Publishing a signed image list, as an endorsing site does: a CA and an endorser certificate made
 * with openssl, the HEPiX JSON document, and its S/MIME signature (multipart/signed with a detached
 * PKCS#7 signature, the form `verifySmime` takes). The demo and the benches publish their lists
 * with it; the test PKI uses the same openssl commands. EC keys keep it quick.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { exists, hashFile } from '../../lib/files.js';
import type { Run } from '../runner.js';
import type { ImageList, ListedImage } from './imagelist.js';

export interface Identity {
  cert: string;
  key: string;
  /** Slash form, as in hv:dn. */
  dn: string;
  /** The issuer in slash form, as in hv:ca. */
  caDn: string;
}

/**
 * An openssl CA configuration: a database for revocations and CRLs, and the extensions of a CA
 * certificate (`ca_ext`) and of an endorser's (`endorser_ext`).
 */
export function caConfig(dir: string): string {
  return `[ ca ]
default_ca = imgflow_ca
[ imgflow_ca ]
database = ${dir}/index.txt
new_certs_dir = ${dir}
serial = ${dir}/serial
crlnumber = ${dir}/crlnumber
default_md = sha256
default_crl_days = 30
policy = any_subject
[ any_subject ]
commonName = supplied
[ req ]
distinguished_name = req_dn
[ req_dn ]
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ endorser_ext ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = emailProtection,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** The openssl commands of a small PKI, as argv. */
export const opensslArgv = {
  /** A self-signed CA certificate and its key. */
  selfSignedCa: (config: string, key: string, cert: string, dn: string) => [
    'openssl',
    'req',
    '-config',
    config,
    '-x509',
    ...EC_KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '3650',
    '-subj',
    dn,
    '-extensions',
    'ca_ext',
  ],
  /** A key and a certificate request. */
  request: (config: string, key: string, csr: string, dn: string) => [
    'openssl',
    'req',
    '-config',
    config,
    '-new',
    ...EC_KEY,
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    dn,
  ],
  /** The CA signs an endorser's request. */
  issueEndorser: (config: string, ca: Pick<Identity, 'cert' | 'key'>, csr: string, cert: string, serial: number) => [
    'openssl',
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-set_serial',
    String(serial),
    '-days',
    '365',
    '-out',
    cert,
    '-extfile',
    config,
    '-extensions',
    'endorser_ext',
  ],
  /** The subject (or CRL issuer) hash that names a file in a hashed CA directory. */
  subjectHash: (kind: 'x509' | 'crl', file: string) => ['openssl', kind, '-hash', '-noout', '-in', file],
  /** multipart/signed S/MIME with a detached signature. */
  sign: (input: string, signer: Pick<Identity, 'cert' | 'key'>, output: string) => [
    'openssl',
    'smime',
    '-sign',
    '-in',
    input,
    '-signer',
    signer.cert,
    '-inkey',
    signer.key,
    '-out',
    output,
  ],
};

export interface Endorsement {
  /** Hashed CA directory holding the CA, for `--ca-dir`. */
  caDir: string;
  ca: Identity;
  endorser: Identity;
}

/**
 * A CA, its hashed CA directory and one endorser under it, in `dir`. Made once: everything is made
 * in a scratch directory that is renamed into place, so a later call finds all of it or none.
 */
export async function ensureEndorsement(
  run: Run,
  dir: string,
  names: { ca: string; endorser: string },
): Promise<Endorsement> {
  const at = (root: string) => ({
    caDir: path.join(root, 'certificates'),
    ca: { cert: path.join(root, 'ca.pem'), key: path.join(root, 'ca.key'), dn: names.ca, caDn: names.ca },
    endorser: {
      cert: path.join(root, 'endorser.pem'),
      key: path.join(root, 'endorser.key'),
      dn: names.endorser,
      caDn: names.ca,
    },
  });
  const made = at(dir);
  if (await exists(made.caDir)) return made;

  await fs.mkdir(path.dirname(dir), { recursive: true });
  const scratch = await fs.mkdtemp(`${dir}.partial-`);
  try {
    const { ca, endorser, caDir } = at(scratch);
    const config = path.join(scratch, 'ca.cnf');
    await fs.writeFile(config, caConfig(dir));
    await fs.writeFile(path.join(scratch, 'index.txt'), '');
    await fs.writeFile(path.join(scratch, 'crlnumber'), '01\n');
    await run(opensslArgv.selfSignedCa(config, ca.key, ca.cert, ca.dn));
    const csr = path.join(scratch, 'endorser.csr');
    await run(opensslArgv.request(config, endorser.key, csr, endorser.dn));
    await run(opensslArgv.issueEndorser(config, ca, csr, endorser.cert, 1));
    await fs.mkdir(caDir);
    const hash = (await run(opensslArgv.subjectHash('x509', ca.cert))).stdout.trim();
    await fs.copyFile(ca.cert, path.join(caDir, `${hash}.0`));
    await fs.rename(scratch, dir);
  } catch (error) {
    await fs.rm(scratch, { recursive: true, force: true });
    throw error;
  }
  return made;
}

/** Size and sha512 of a file, as a list entry gives them. */
export async function fileDigest(file: string): Promise<{ size: number; sha512: string }> {
  return { size: (await fs.stat(file)).size, sha512: await hashFile(file, 'sha512') };
}

function imageEntry(image: ListedImage): Record<string, unknown> {
  return {
    'hv:image': {
      'dc:identifier': image.identifier,
      'dc:title': image.title,
      'dc:description': image.description,
      'hv:size': image.size,
      'sl:checksum:sha512': image.sha512,
      'hv:uri': image.uri,
      'hv:version': image.version,
      'hv:hypervisor': image.hypervisor,
      ...(image.format !== undefined ? { 'hv:format': image.format } : {}),
      'sl:arch': image.arch,
      'sl:os': image.os,
      'sl:osversion': image.osVersion,
      'sl:comments': image.comments,
      ...(image.marketplaceUri !== undefined ? { 'ad:mpuri': image.marketplaceUri } : {}),
      ...(image.expires !== undefined ? { 'dc:date:expires': image.expires } : {}),
    },
  };
}

/** The HEPiX JSON document of a list: what `parseImageList` reads back. */
export function imageListDocument(list: ImageList): string {
  return JSON.stringify({
    'hv:imagelist': {
      'dc:date:created': list.created,
      'dc:date:expires': list.expires,
      'dc:identifier': list.identifier,
      'dc:description': list.description,
      'dc:title': list.title,
      'dc:source': list.source,
      'hv:version': list.version,
      'hv:uri': list.uri,
      ...(list.vo !== undefined ? { 'ad:vo': list.vo } : {}),
      'hv:endorser': {
        'hv:x509': {
          'hv:dn': list.endorser.dn,
          'hv:ca': list.endorser.ca,
          'hv:email': list.endorser.email,
          'dc:creator': list.endorser.creator,
        },
      },
      'hv:images': list.images.map(imageEntry),
    },
  });
}

/**
 * Signs the list as `signer` into `output`. The signed file replaces the previous one in one
 * rename, so a server publishing it never hands out half a list.
 */
export async function signImageList(
  run: Run,
  list: ImageList,
  signer: Pick<Identity, 'cert' | 'key'>,
  output: string,
): Promise<void> {
  const body = `${output}.json`;
  const partial = `${output}.partial`;
  await fs.writeFile(body, imageListDocument(list));
  await run(opensslArgv.sign(body, signer, partial));
  await fs.rename(partial, output);
}
