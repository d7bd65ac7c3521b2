/**
 * OCI activities:
 * - `pushVersionToRegistry` on the NAS that stores the version (`nas.<host>`): its files are read
 *   where they are, checked against the version's record, pushed and signed with the site's key
 *   (a file on that host: only its path travels);
 * - `listOciRepository` (control) and `pullOciImage` (cloud), which the subscription's list
 *   fetching and downloading use for `oci://` sources (see ./source.ts).
 * Registry credentials, CAs and keys are files on the worker; inputs carry their paths only.
 */
import { Context } from '@temporalio/activity';
import path from 'node:path';
import { checkName, InputError } from '../../common/names.js';
import type { Artifact } from '../../common/lineage.js';
import { paths, type Config } from '../../lib/config.js';
import type { Logger } from '../../lib/logger.js';
import type { VersionArtifacts } from './artifact.js';
import { readPrivateKey } from './cosign.js';
import { parseReference } from '../../common/oci.js';
import { clientFor, pushVersion, type PushResult, type RegistryAccess } from './transfer.js';

export interface OciDeps {
  config: Pick<Config, 'home' | 'host'>;
  logger?: Logger;
  /** Registry client settings for tests: retries, stall timeout. */
  client?: { retries?: number; stallTimeoutMs?: number; retryDelayMs?: number };
}

export interface PushVersionInput {
  /** `<registry>/<repository>:<tag>` */
  to: string;
  version: Omit<VersionArtifacts, 'files'>;
  /** The version's artifacts stored on this host. */
  artifacts: Pick<Artifact, 'format' | 'path' | 'sha256' | 'bytes'>[];
  /** The PEM private key (ECDSA P-256) on this host. */
  signingKeyFile: string;
  access?: RegistryAccess;
}

function heartbeat(details: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // Not in an activity (tests call the functions directly).
  }
}

export function checkWorkerPath(field: string, value: unknown): string {
  if (typeof value !== 'string' || !path.isAbsolute(value) || value.split('/').includes('..') || /[\0\n]/.test(value))
    throw new InputError(field, 'an absolute path', value);
  return value;
}

function checkAccess(access: RegistryAccess | undefined): RegistryAccess {
  return {
    ...(access?.credentialsFile !== undefined
      ? { credentialsFile: checkWorkerPath('credentials-file', access.credentialsFile) }
      : {}),
    ...(access?.caFile !== undefined ? { caFile: checkWorkerPath('ca-file', access.caFile) } : {}),
    ...(access?.plainHttp === true ? { plainHttp: true } : {}),
  };
}

export function createOciPushActivities(deps: OciDeps) {
  const store = path.join(paths(deps.config).nas(deps.config.host), 'store');
  return {
    /** Pushes and signs a stored version; a second push of the same version uploads nothing. */
    async pushVersionToRegistry(input: PushVersionInput): Promise<PushResult> {
      const ref = parseReference('to', input.to);
      checkName('image', input.version.image);
      checkName('version', input.version.version);
      if (!input.artifacts.length) throw new InputError('artifacts', 'at least one stored artifact', input.artifacts);
      for (const artifact of input.artifacts) {
        const file = checkWorkerPath('artifact', artifact.path);
        if (!file.startsWith(`${store}/`))
          throw new InputError('artifact', `a file in this NAS's image store (${store})`, file);
      }
      const key = await readPrivateKey(checkWorkerPath('signing-key', input.signingKeyFile));
      let sent = 0;
      const client = await clientFor(ref, checkAccess(input.access), {
        ...deps.client,
        progress: (bytes) => {
          sent = bytes;
          heartbeat({ bytes: sent });
        },
      });
      try {
        heartbeat({ step: 'pushing' });
        const result = await pushVersion(client, ref, input.version, input.artifacts, key);
        deps.logger?.info(
          { to: input.to, digest: result.digest, uploadedBlobs: result.uploadedBlobs, signed: result.signed },
          'pushed',
        );
        return result;
      } finally {
        client.close();
      }
    },
  };
}

export type OciPushActivities = ReturnType<typeof createOciPushActivities>;
