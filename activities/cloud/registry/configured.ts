/**
 * The registry and trust anchors a cloud or control worker uses, from its configuration: the
 * built-in catalog under `<home>/catalog` unless IMGFLOW_ONE_ENDPOINT names an OpenNebula front-end.
 * The OpenNebula password is read from a file at worker start and lives only in the registry
 * object; it never travels in an activity input, so it never reaches workflow history.
 */
import fs from 'node:fs';
import { checkInt, InputError } from '../../../common/names.js';
import { paths, type Config } from '../../../lib/config.js';
import type { Logger } from '../../../lib/logger.js';
import type { TrustAnchors } from '../smime.js';
import { CatalogRegistry } from './catalog.js';
import { OpenNebulaRegistry } from './opennebula.js';
import type { DiskFormat, ImageRegistry } from './types.js';

/** Where grid sites keep their hashed CA directory. */
export const DEFAULT_CA_DIR = '/etc/grid-security/certificates';

function diskFormat(value: string | undefined): DiskFormat {
  const format = value || 'qcow2';
  if (format !== 'qcow2' && format !== 'raw') throw new InputError('IMGFLOW_CLOUD_FORMAT', 'qcow2 or raw', value);
  return format;
}

/** The first line of the password file; an empty one is a configuration error, not an empty password. */
function readPassword(file: string | undefined): string {
  if (!file) throw new InputError('IMGFLOW_ONE_PASSWORD_FILE', 'a file holding the OpenNebula password when IMGFLOW_ONE_ENDPOINT is set', undefined);
  const password = fs.readFileSync(file, 'utf8').split('\n')[0]!.trim();
  if (!password) throw new InputError('IMGFLOW_ONE_PASSWORD_FILE', 'a file whose first line is the password', file);
  return password;
}

export function cloudRegistry(config: Pick<Config, 'home'>, env: NodeJS.ProcessEnv, logger?: Logger): ImageRegistry {
  const format = diskFormat(env.IMGFLOW_CLOUD_FORMAT);
  if (!env.IMGFLOW_ONE_ENDPOINT) return new CatalogRegistry({ dir: paths(config).catalog, format });
  return new OpenNebulaRegistry({
    endpoint: env.IMGFLOW_ONE_ENDPOINT,
    user: env.IMGFLOW_ONE_USER || 'oneadmin',
    password: readPassword(env.IMGFLOW_ONE_PASSWORD_FILE),
    datastoreId: checkInt('IMGFLOW_ONE_DATASTORE', env.IMGFLOW_ONE_DATASTORE ?? '1', 0, 1_000_000),
    format,
    logger,
  });
}

export function trustAnchors(env: NodeJS.ProcessEnv): TrustAnchors {
  return { caDir: env.IMGFLOW_CA_DIR || DEFAULT_CA_DIR };
}
