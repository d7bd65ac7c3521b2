/**
 * iSCSI export through the kernel target (LIO), for production NAS hosts. Changes go through
 * targetcli one command per call; what exists is read from configfs, which is cheaper and
 * steadier to read than targetcli's tree drawing. One target per volume, LUN 0 backed by the
 * volume, one ACL for the compute host's initiator (without an ACL LIO admits nobody, as
 * generate_node_acls is off by default).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { exists } from '../../../lib/files.js';
import type { Run } from '../../runner.js';
import { checkIqn, checkPortal, DEFAULT_IQN_PREFIX, iscsiUrl, targetIqn, volumeOfTarget } from '../naming.js';
import type { ExportDriver, ExportInfo, ExportRequest } from '../types.js';

export interface LioExportConfig {
  run: Run;
  nas: string;
  /** The address initiators dial, `host[:port]`. */
  portal: string;
  iqnPrefix?: string;
  /** Where the kernel target's configfs tree is mounted. */
  configfs?: string;
  /** Write /etc/target/saveconfig.json after each change, so exports survive a reboot. */
  persist?: boolean;
}

const TPG = 'tpg1';
const TPG_DIR = 'tpgt_1';
const LUN_DIR = 'lun_0';

/** Block devices (zvols) use the block backstore; files (raw disks in datasets) use fileio. */
function backstoreType(devicePath: string): 'block' | 'fileio' {
  return devicePath.startsWith('/dev/') ? 'block' : 'fileio';
}

export function createLioExport(config: LioExportConfig): ExportDriver {
  const { run, nas } = config;
  const prefix = config.iqnPrefix ?? DEFAULT_IQN_PREFIX;
  const portal = checkPortal('portal', config.portal);
  const configfs = config.configfs ?? '/sys/kernel/config/target';
  const persist = config.persist ?? true;
  const targetcli = (...args: string[]) => run(['targetcli', ...args]);
  const backstoreName = (volume: string) => `imgflow-${volume}`;
  const targetDir = (iqn: string) => path.join(configfs, 'iscsi', iqn);

  /** The configfs directory of a backstore by name: core/<type>_<n>/<name>. */
  async function findBackstore(name: string): Promise<{ type: string; dir: string } | undefined> {
    const hbas = await fs.readdir(path.join(configfs, 'core')).catch(() => [] as string[]);
    for (const hba of hbas) {
      const dir = path.join(configfs, 'core', hba, name);
      if (await exists(dir)) return { type: hba.startsWith('iblock_') ? 'block' : hba.replace(/_\d+$/, ''), dir };
    }
    return undefined;
  }

  /** The backing device's path as LIO records it (`udev_path`), where readable. */
  async function backingPath(name: string): Promise<string> {
    const found = await findBackstore(name);
    if (!found) return '';
    return (await fs.readFile(path.join(found.dir, 'udev_path'), 'utf8').catch(() => '')).trim();
  }

  async function acls(iqn: string): Promise<string[]> {
    return (await fs.readdir(path.join(targetDir(iqn), TPG_DIR, 'acls')).catch(() => [] as string[])).sort();
  }

  async function describe(volume: string, iqn: string): Promise<ExportInfo> {
    return {
      kind: 'lio',
      volume,
      target: iqn,
      url: iscsiUrl(portal, iqn, 0),
      devicePath: await backingPath(backstoreName(volume)),
      initiators: await acls(iqn),
    };
  }

  async function ensureBackstore(volume: string, devicePath: string): Promise<string> {
    const name = backstoreName(volume);
    const type = backstoreType(devicePath);
    const found = await findBackstore(name);
    if (found) {
      if (found.type !== type) throw new Error(`backstore ${name} exists as ${found.type}, expected ${type}`);
      return `/backstores/${type}/${name}`;
    }
    const source = type === 'block' ? `dev=${devicePath}` : `file_or_dev=${devicePath}`;
    await targetcli(`/backstores/${type}`, 'create', `name=${name}`, source);
    return `/backstores/${type}/${name}`;
  }

  /** Exactly one ACL: the requested initiator's, created after the LUN so it maps it automatically. */
  async function ensureOnlyInitiator(iqn: string, initiator: string): Promise<void> {
    const current = await acls(iqn);
    if (!current.includes(initiator)) await targetcli(`/iscsi/${iqn}/${TPG}/acls`, 'create', initiator);
    for (const other of current.filter((acl) => acl !== initiator))
      await targetcli(`/iscsi/${iqn}/${TPG}/acls`, 'delete', other);
  }

  async function save(): Promise<void> {
    if (persist) await targetcli('saveconfig');
  }

  async function find(volume: string): Promise<ExportInfo | undefined> {
    const iqn = targetIqn(prefix, nas, volume);
    return (await exists(targetDir(iqn))) ? describe(volume, iqn) : undefined;
  }

  return {
    kind: 'lio',
    find,

    async export(request: ExportRequest) {
      const iqn = targetIqn(prefix, nas, request.volume);
      const initiator = checkIqn('initiator', request.initiator);
      if (request.format && request.format !== 'raw')
        throw new Error(`LIO serves raw disks only; volume ${request.volume} is ${request.format}`);
      const backstore = await ensureBackstore(request.volume, request.devicePath);
      if (!(await exists(targetDir(iqn)))) await targetcli('/iscsi', 'create', iqn);
      if (!(await exists(path.join(targetDir(iqn), TPG_DIR, 'lun', LUN_DIR))))
        await targetcli(`/iscsi/${iqn}/${TPG}/luns`, 'create', backstore);
      await ensureOnlyInitiator(iqn, initiator);
      await save();
      return describe(request.volume, iqn);
    },

    /** The target goes first (it holds the LUN that uses the backstore), then the backstore. */
    async unexport(volume) {
      const iqn = targetIqn(prefix, nas, volume);
      const name = backstoreName(volume);
      const hadTarget = await exists(targetDir(iqn));
      if (hadTarget) await targetcli('/iscsi', 'delete', iqn);
      const backstore = await findBackstore(name);
      if (backstore) await targetcli(`/backstores/${backstore.type}`, 'delete', name);
      if (hadTarget || backstore) await save();
    },

    async list() {
      const result: ExportInfo[] = [];
      for (const iqn of (await fs.readdir(path.join(configfs, 'iscsi')).catch(() => [] as string[])).sort()) {
        const volume = volumeOfTarget(prefix, nas, iqn);
        if (volume) result.push(await describe(volume, iqn));
      }
      return result;
    },
  };
}
