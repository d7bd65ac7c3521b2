/**
 * Verification of S/MIME-signed image lists (multipart/signed, detached PKCS#7) with openssl,
 * through the runner. The chain is checked against a CA directory in OpenSSL's hashed layout (as
 * /etc/grid-security/certificates), with CRLs when the directory holds any; the signer's subject
 * and issuer are then read in slash form so they can be compared with the list's hv:dn and hv:ca.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { CommandError, type Run } from '../runner.js';
import {
  checkImageList,
  checkSigner,
  ImageListError,
  parseImageList,
  type ImageList,
  type ListExpectations,
} from './imagelist.js';

export interface TrustAnchors {
  /** Hashed CA directory (`<hash>.0` certificates, `<hash>.r0` CRLs), as `-CApath`. */
  caDir?: string;
  /** A bundle of CA certificates (and CRLs), as `-CAfile`. */
  caFile?: string;
  /** Require a CRL for every certificate checked; default: when the CA directory holds CRLs. */
  crlCheck?: boolean;
}

export interface VerifyOptions extends TrustAnchors {
  /** Skips signature verification entirely: only ever set by an explicit subscription setting. */
  insecure?: boolean;
  timeoutMs?: number;
}

export interface Signer {
  subject: string;
  issuer: string;
}

export interface VerifiedMessage {
  body: string;
  /** Absent only when verification was skipped with `insecure`. */
  signer?: Signer;
  verified: boolean;
}

/** A hashed directory's CRLs are named `<8 hex>.r<n>`. */
async function directoryHasCrls(dir: string): Promise<boolean> {
  return (await fs.readdir(dir)).some((name) => /^[0-9a-f]{8}\.r\d+$/.test(name));
}

function trustArguments(options: TrustAnchors, crls: boolean): string[] {
  const args: string[] = [];
  if (options.caDir) args.push('-CApath', options.caDir);
  if (options.caFile) args.push('-CAfile', options.caFile);
  if (args.length === 0)
    throw new ImageListError('signature', 'no CA directory or CA file configured to verify against');
  if (crls) args.push('-crl_check');
  return args;
}

/**
 * `subject=/C=CH/O=x/CN=y` lines, in openssl's slash ("compat") form. openssl escapes a `/` inside
 * a value (`CN=host\/vmcaster.example.org`); image lists write it plain, so it is unescaped here.
 */
export function parseSubjectIssuer(text: string): Signer {
  const value = (key: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${key}=`));
    if (!line) throw new ImageListError('signer', `openssl printed no ${key} for the signer certificate`);
    return line
      .slice(key.length + 1)
      .trim()
      .replaceAll('\\/', '/');
  };
  return { subject: value('subject'), issuer: value('issuer') };
}

/**
 * openssl's reason in a few words: "Verify error: certificate revoked" when the chain failed, the
 * reason field of its first `:error:` line otherwise (e.g. "digest failure" for a tampered body).
 */
function opensslReason(error: unknown): string {
  if (!(error instanceof CommandError)) return (error as Error).message;
  const lines = error.stderrTail
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const chain = lines.map((l) => /Verify error:\s*(.+)$/.exec(l)?.[1]).find(Boolean);
  if (chain) return `certificate verify error: ${chain}`;
  // <thread>:error:<code>:<library>:<function>:<reason>:<file>:<line>:<data>
  const reason = lines.map((l) => l.split(':')).find((parts) => parts[1] === 'error' && parts[5])?.[5];
  return reason ?? lines[lines.length - 1] ?? error.message;
}

/**
 * Verifies `signedFile` and returns the signed content. Refusals are ImageListErrors naming the
 * check: "signature" for a missing, tampered or untrusted signature.
 */
export async function verifySmime(
  run: Run,
  signedFile: string,
  workDir: string,
  options: VerifyOptions,
): Promise<VerifiedMessage> {
  if (options.insecure) {
    return { body: await extractUnverified(run, signedFile, workDir, options), verified: false };
  }
  const crls = options.crlCheck ?? (options.caDir ? await directoryHasCrls(options.caDir) : false);
  const trust = trustArguments(options, crls);
  // A scratch directory per call: concurrent verifications never read each other's output.
  await fs.mkdir(workDir, { recursive: true });
  const scratch = await fs.mkdtemp(path.join(workDir, 'smime-'));
  try {
    const bodyFile = path.join(scratch, 'body');
    const signerFile = path.join(scratch, 'signer.pem');
    try {
      await run(
        [
          'openssl',
          'smime',
          '-verify',
          '-in',
          signedFile,
          '-inform',
          'SMIME',
          ...trust,
          '-signer',
          signerFile,
          '-out',
          bodyFile,
        ],
        {
          timeoutMs: options.timeoutMs ?? 60_000,
        },
      );
    } catch (error) {
      throw new ImageListError('signature', opensslReason(error));
    }
    const names = await run(
      ['openssl', 'x509', '-in', signerFile, '-noout', '-subject', '-issuer', '-nameopt', 'compat'],
      { timeoutMs: 30_000 },
    );
    return { body: await fs.readFile(bodyFile, 'utf8'), signer: parseSubjectIssuer(names.stdout), verified: true };
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
}

/** The content of a signed message without checking anything; a plain file is taken as it is. */
async function extractUnverified(
  run: Run,
  signedFile: string,
  workDir: string,
  options: VerifyOptions,
): Promise<string> {
  const raw = await fs.readFile(signedFile, 'utf8');
  if (!/^content-type:\s*multipart\/signed/im.test(raw.slice(0, 4096))) return raw;
  await fs.mkdir(workDir, { recursive: true });
  const scratch = await fs.mkdtemp(path.join(workDir, 'smime-'));
  try {
    const bodyFile = path.join(scratch, 'body');
    await run(['openssl', 'smime', '-verify', '-noverify', '-nosigs', '-in', signedFile, '-out', bodyFile], {
      timeoutMs: options.timeoutMs ?? 60_000,
    });
    return await fs.readFile(bodyFile, 'utf8');
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
}

export interface VerifiedImageList {
  list: ImageList;
  signer?: Signer;
  verified: boolean;
}

/**
 * Everything a subscription checks before it trusts a downloaded list: the signature and chain,
 * the signer against the list's endorser, then the list's own rules (identifier, dates, version).
 */
export async function verifyImageList(
  run: Run,
  signedFile: string,
  workDir: string,
  options: VerifyOptions & { expect: ListExpectations },
): Promise<VerifiedImageList> {
  const message = await verifySmime(run, signedFile, workDir, options);
  const list = parseImageList(message.body);
  if (message.signer) checkSigner(list, message.signer);
  checkImageList(list, options.expect);
  return { list, signer: message.signer, verified: message.verified };
}
