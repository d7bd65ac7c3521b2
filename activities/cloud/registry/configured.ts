/**
 * The registry and trust anchors a cloud or control worker uses, from its settings (lib/config.ts):
 * the built-in catalog under `<home>/catalog` unless IMGFLOW_ONE_ENDPOINT names an OpenNebula front-end.
 * The OpenNebula password is read from a file at worker start and lives only in the registry
 * object; it never travels in an activity input, so it never reaches workflow history.
 */
import fs from 'node:fs';
import { InputError } from '../../../common/names.js';
import { paths, type Config, type RegistrySettings } from '../../../lib/config.js';
import type { Logger } from '../../../lib/logger.js';
import { CatalogRegistry } from './catalog.js';
import { OpenNebulaRegistry } from './opennebula.js';
import type { ImageRegistry } from './types.js';

/** The first line of the password file; an empty one is a configuration error, not an empty password. */
function readPassword(file: string): string {
  const password = fs.readFileSync(file, 'utf8').split('\n')[0]!.trim();
  if (!password) throw new InputError('IMGFLOW_ONE_PASSWORD_FILE', 'a file whose first line is the password', file);
  return password;
}

export function cloudRegistry(
  config: Pick<Config, 'home'>,
  settings: RegistrySettings,
  logger?: Logger,
): ImageRegistry {
  const { opennebula, ...format } = settings;
  if (!opennebula) return new CatalogRegistry({ dir: paths(config).catalog, ...format });
  const { passwordFile, ...one } = opennebula;
  return new OpenNebulaRegistry({ ...one, password: readPassword(passwordFile), ...format, logger });
}
