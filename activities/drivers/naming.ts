/**
 * Names the drivers build from checked volume and host names: iSCSI qualified names, iscsi:// and
 * nbd:// URLs, snapshot names. Everything parsed from outside is checked again here.
 */
import { checkHost, checkName, InputError } from '../../common/names.js';
import { SNAPSHOT_PREFIX } from './types.js';

export const DEFAULT_IQN_PREFIX = 'iqn.2026-01.org.imgflow';

/** RFC 3720 iqn./eui. names, lower case; iSCSI names allow no `_`, so none is accepted here. */
const IQN = /^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[a-z0-9.:-]+)?$/;
const EUI = /^eui\.[0-9a-f]{16}$/;

export function checkIqn(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length > 223 || !(IQN.test(value) || EUI.test(value))) {
    throw new InputError(field, 'an iSCSI name such as iqn.2026-01.org.example:host (lower case, no "_")', value);
  }
  return value;
}

/** `iqn.2026-01.org.imgflow:<nas>.<volume>`: one target per volume, named after the NAS serving it. */
export function targetIqn(prefix: string, nas: string, volume: string): string {
  checkHost('nas', nas);
  checkName('volume', volume);
  if (volume.includes('_')) throw new InputError('volume', 'a name without "_" to be exported over iSCSI', volume);
  return checkIqn('target', `${prefix}:${nas}.${volume}`);
}

/** The volume a target of this NAS serves, or undefined for any other target. */
export function volumeOfTarget(prefix: string, nas: string, iqn: string): string | undefined {
  const head = `${prefix}:${nas}.`;
  if (!iqn.startsWith(head)) return undefined;
  const volume = iqn.slice(head.length);
  try {
    return checkName('volume', volume);
  } catch {
    return undefined;
  }
}

/** host, IPv4 or [IPv6], optionally with a port. */
const ADDRESS = /^([a-z0-9.-]+|\[[0-9a-f:]+\])(:\d{1,5})?$/i;

export function checkPortal(field: string, value: unknown): string {
  if (typeof value !== 'string' || !ADDRESS.test(value))
    throw new InputError(field, 'host, IPv4 or [IPv6], with an optional :port', value);
  return value;
}

export function iscsiUrl(portal: string, iqn: string, lun = 1): string {
  return `iscsi://${checkPortal('portal', portal)}/${checkIqn('target', iqn)}/${lun}`;
}

export interface IscsiAddress {
  portal: string;
  iqn: string;
  lun: number;
}

export function parseIscsiUrl(url: string): IscsiAddress {
  const m = /^iscsi:\/\/([^/@]+)\/([^/]+)\/(\d{1,4})$/.exec(url);
  if (!m) throw new InputError('url', 'iscsi://<portal>/<target iqn>/<lun>', url);
  return { portal: checkPortal('portal', m[1]), iqn: checkIqn('target', m[2]), lun: Number(m[3]) };
}

export function nbdUrl(address: string, port: number, exportName: string): string {
  return `nbd://${checkPortal('address', address)}:${port}/${checkName('export', exportName)}`;
}

export function parseNbdUrl(url: string): { address: string; port: number; exportName: string } {
  const m = /^nbd:\/\/([a-z0-9.-]+|\[[0-9a-f:]+\]):(\d{1,5})\/([^/]+)$/i.exec(url);
  if (!m) throw new InputError('url', 'nbd://<address>:<port>/<export>', url);
  return { address: m[1]!, port: Number(m[2]), exportName: checkName('export', m[3]) };
}

/** `imgflow-20261121t054000123z`: sorts by time as text, and passes as a name. */
export function snapshotName(now = new Date()): string {
  return `${SNAPSHOT_PREFIX}${now.toISOString().replace(/[-:.]/g, '').toLowerCase()}`;
}

export function checkSnapshotName(field: string, value: unknown): string {
  const name = checkName(field, value);
  if (!name.startsWith(SNAPSHOT_PREFIX))
    throw new InputError(field, `a snapshot name starting with ${SNAPSHOT_PREFIX}`, value);
  return name;
}
