/**
 * No export: the volume is used on the host that stores it (the compute node's local copy, or a
 * single-host setup). The "URL" is the device path itself. With a store given, find and list
 * report the store's volumes, since each is usable in place.
 */
import { checkName } from '../../../common/names.js';
import type { ExportDriver, ExportInfo, StorageDriver, VolumeInfo } from '../types.js';

export interface NoneExportConfig {
  storage?: Pick<StorageDriver, 'describe' | 'list'>;
}

function info(volume: VolumeInfo): ExportInfo {
  return {
    kind: 'none',
    volume: volume.volume,
    target: volume.devicePath,
    url: volume.devicePath,
    devicePath: volume.devicePath,
    initiators: [],
  };
}

export function createNoneExport({ storage }: NoneExportConfig = {}): ExportDriver {
  async function find(volume: string): Promise<ExportInfo | undefined> {
    const found = await storage?.describe(checkName('volume', volume));
    return found && info(found);
  }

  return {
    kind: 'none',
    find,
    async export(request) {
      checkName('volume', request.volume);
      if (!request.devicePath.startsWith('/'))
        throw new Error(`device path of ${request.volume} must be absolute: ${request.devicePath}`);
      return {
        kind: 'none',
        volume: request.volume,
        target: request.devicePath,
        url: request.devicePath,
        devicePath: request.devicePath,
        initiators: [],
      };
    },
    async unexport(volume) {
      checkName('volume', volume);
    },
    async list() {
      const result: ExportInfo[] = [];
      for (const volume of (await storage?.list()) ?? []) {
        const found = await find(volume);
        if (found) result.push(found);
      }
      return result;
    },
  };
}
