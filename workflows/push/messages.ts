/**
 * What the push workflow takes and gives: pure types and checks, shared by the workflow, its client
 * and the CLI. A push names the version's stored files and where the signing key, the registry's
 * credentials and its CA are on the NAS: paths only, never their content.
 */
import { checkHost, checkName, InputError } from '../../common/names.js';
import type { Artifact } from '../../common/lineage.js';
import type { VersionArtifacts } from '../../activities/oci/artifact.js';
import type { PushResult, RegistryAccess } from '../../activities/oci/transfer.js';

export type { PushResult, RegistryAccess };

export interface PushInput {
  /** `<registry>/<repository>:<tag>` */
  to: string;
  /** The NAS whose store holds the files; the push runs there. */
  host: string;
  version: Omit<VersionArtifacts, 'files'>;
  artifacts: Pick<Artifact, 'format' | 'path' | 'sha256' | 'bytes'>[];
  signingKeyFile: string;
  access?: RegistryAccess;
  /** How long the push may wait for the NAS's worker. */
  workerWaitSeconds?: number;
}

export const pushWorkflowId = (image: string, version: string, to: string) =>
  `push-${checkName('image', image)}-${checkName('version', version)}-${to.replace(/[^A-Za-z0-9._-]/g, '_')}`;

export function checkPushInput(input: PushInput): PushInput {
  if (typeof input !== 'object' || input === null) throw new InputError('push', 'the push settings', input);
  checkHost('host', input.host);
  checkName('image', input.version?.image);
  checkName('version', input.version?.version);
  if (!Array.isArray(input.artifacts) || !input.artifacts.length)
    throw new InputError('artifacts', 'at least one stored artifact', input.artifacts);
  if (typeof input.signingKeyFile !== 'string' || !input.signingKeyFile.startsWith('/'))
    throw new InputError('signing-key', 'an absolute path on the NAS', input.signingKeyFile);
  return input;
}
