/**
 * `imgflow subscribe oci://<registry>/<repository> --key <pub> [--arch A] [--ca-file F]`: the
 * subscription's settings for an OCI repository source. The key's identity (its SPKI's sha256)
 * stands where a list's endorser does, so images are owned and checked the same way.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { publicKeyFrom } from '../activities/oci/cosign.js';
import { checkArch, checkHost, checkName, InputError } from '../common/names.js';
import { parseReference, type OciSourceSettings } from '../common/oci.js';
import { machineArch } from '../lib/config.js';
import { checkSubscriptionConfig, type SubscriptionConfig } from '../common/subscription.js';

export interface OciSubscribeOptions {
  key?: string;
  arch?: string;
  caFile?: string;
  plainHttp?: boolean;
  credentialsFile?: string;
  endorserDn?: string;
  endorserCa?: string;
  every: string;
  newImages: string;
  registry: string;
  username?: string;
  passwordFile?: string;
  format: string;
  stage?: boolean;
  identifier?: string;
  name?: string;
  site?: string;
  insecure?: boolean;
}

function absoluteFile(field: string, file: string): string {
  const absolute = path.resolve(file);
  if (!fs.existsSync(absolute) || !fs.statSync(absolute).isFile())
    throw new InputError(field, 'an existing file', file);
  return absolute;
}

/** The endorser a key stands for: the same text keyIdentity gives on the workers. */
function keyEndorser(keyFile: string): { dn: string; ca: string } {
  const key = publicKeyFrom(fs.readFileSync(keyFile, 'utf8'), keyFile);
  const fingerprint = createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex');
  return { dn: `/O=cosign/CN=sha256-${fingerprint.slice(0, 32)}`, ca: '/O=cosign/CN=public key' };
}

export function ociSubscriptionFromOptions(
  url: string,
  opts: OciSubscribeOptions,
  defaultSite: string,
): SubscriptionConfig {
  const ref = parseReference('url', url);
  if (opts.key === undefined && !opts.insecure)
    throw new InputError('--key', 'the public key signatures must verify with (or --insecure)', undefined);
  const keyFile = opts.key === undefined ? undefined : absoluteFile('--key', opts.key);
  const oci: OciSourceSettings = {
    arch: checkArch('--arch', opts.arch ?? machineArch()),
    ...(keyFile ? { keyFile } : {}),
    ...(opts.caFile ? { caFile: absoluteFile('--ca-file', opts.caFile) } : {}),
    ...(opts.credentialsFile ? { credentialsFile: absoluteFile('--credentials-file', opts.credentialsFile) } : {}),
    ...(opts.plainHttp ? { plainHttp: true } : {}),
  };
  const config: SubscriptionConfig = {
    name: checkName('--name', opts.name ?? `oci-${ref.repository.split('/').at(-1)!}`.slice(0, 64)),
    url,
    endorser: keyFile ? keyEndorser(keyFile) : { dn: '/O=cosign/CN=unverified', ca: '/O=cosign/CN=unverified' },
    every: opts.every,
    newImages: opts.newImages as SubscriptionConfig['newImages'],
    registry: opts.registry as SubscriptionConfig['registry'],
    format: opts.format as SubscriptionConfig['format'],
    stage: opts.stage === true,
    site: checkHost('--site', opts.site ?? defaultSite),
    oci,
    ...(opts.identifier !== undefined ? { identifier: opts.identifier } : {}),
    ...(opts.insecure ? { insecure: true } : {}),
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.passwordFile !== undefined ? { passwordFile: path.resolve(opts.passwordFile) } : {}),
  };
  return checkSubscriptionConfig(config);
}
