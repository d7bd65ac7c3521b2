/**
 * iSCSI export through the userspace target daemon (tgtd, driven by tgtadm): one target per
 * volume with the volume as LUN 1, open to exactly one initiator name. tgt has no names for
 * target ids, so ids are chosen from what `--op show` lists, and a clash with a concurrent
 * export is retried with the next free id.
 */
import { CommandError, type Run } from '../../runner.js';
import { checkIqn, checkPortal, DEFAULT_IQN_PREFIX, iscsiUrl, targetIqn, volumeOfTarget } from '../naming.js';
import type { ExportDriver, ExportInfo, ExportRequest } from '../types.js';

export interface TgtExportConfig {
  run: Run;
  /** This NAS's host name, part of every target name. */
  nas: string;
  /** The address initiators dial, `host[:port]`. */
  portal: string;
  iqnPrefix?: string;
  /** tgtd's management channel (`tgtd -C`), when more than one tgtd runs. */
  controlPort?: number;
  /** Remove a target even while an initiator is logged in. */
  force?: boolean;
}

export interface TgtTarget {
  tid: number;
  iqn: string;
  /** LUN number -> backing store path (LUN 0 is tgt's own controller). */
  luns: Map<number, string>;
  acls: string[];
  sessions: number;
}

/** Reads `tgtadm --op show --mode target`: targets, their LUNs' backing paths, ACLs and sessions. */
export function parseTgtShow(stdout: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let current: TgtTarget | undefined;
  let section = '';
  let lun: number | undefined;
  for (const line of stdout.split('\n')) {
    const target = /^Target (\d+): (\S+)/.exec(line);
    if (target) {
      current = { tid: Number(target[1]), iqn: target[2]!, luns: new Map(), acls: [], sessions: 0 };
      targets.push(current);
      section = '';
      continue;
    }
    if (!current) continue;
    const heading = /^ {4}(\S.*):\s*$/.exec(line);
    if (heading) {
      section = heading[1]!;
      continue;
    }
    const text = line.trim();
    if (section === 'I_T nexus information' && /^I_T nexus: \d+/.test(text)) current.sessions++;
    if (section === 'LUN information') {
      const lunLine = /^LUN: (\d+)$/.exec(text);
      if (lunLine) lun = Number(lunLine[1]);
      const backing = /^Backing store path: (.+)$/.exec(text);
      if (backing && lun !== undefined && backing[1] !== 'None') current.luns.set(lun, backing[1]!);
    }
    if (section === 'ACL information' && text) current.acls.push(text);
  }
  return targets;
}

/** Lowest target id not in use. */
export function freeTid(targets: readonly TgtTarget[]): number {
  const used = new Set(targets.map((t) => t.tid));
  let tid = 1;
  while (used.has(tid)) tid++;
  return tid;
}

const LUN = 1;
const CREATE_ATTEMPTS = 5;

export function createTgtExport(config: TgtExportConfig): ExportDriver {
  const { run, nas } = config;
  const prefix = config.iqnPrefix ?? DEFAULT_IQN_PREFIX;
  const portal = checkPortal('portal', config.portal);
  const base = [
    'tgtadm',
    ...(config.controlPort === undefined ? [] : ['-C', String(config.controlPort)]),
    '--lld',
    'iscsi',
  ];
  const tgtadm = (...args: string[]) => run([...base, ...args]);

  async function targets(): Promise<TgtTarget[]> {
    return parseTgtShow((await tgtadm('--op', 'show', '--mode', 'target')).stdout);
  }

  function info(volume: string, target: TgtTarget): ExportInfo {
    return {
      kind: 'tgt',
      volume,
      target: target.iqn,
      url: iscsiUrl(portal, target.iqn, LUN),
      devicePath: target.luns.get(LUN) ?? '',
      initiators: target.acls,
    };
  }

  // This driver's exports choose target ids one at a time: at once, they would all choose the same
  // free id and all but one retry. Another process's export taking the id is still retried.
  let creating: Promise<unknown> = Promise.resolve();

  /**
   * The volume's target, made if absent; a concurrent export taking the same id is retried. A target
   * this call made is known without reading it back: tgt's listing grows with every target it serves.
   */
  async function ensureTarget(iqn: string): Promise<TgtTarget> {
    const made = creating.then(() => findOrMakeTarget(iqn));
    creating = made.catch(() => undefined);
    return made;
  }

  async function findOrMakeTarget(iqn: string): Promise<TgtTarget> {
    for (let attempt = 1; attempt <= CREATE_ATTEMPTS; attempt++) {
      const all = await targets();
      const found = all.find((t) => t.iqn === iqn);
      if (found) return found;
      const tid = freeTid(all);
      try {
        await tgtadm('--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn);
        return { tid, iqn, luns: new Map(), acls: [], sessions: 0 };
      } catch (error) {
        if (!(error instanceof CommandError && /exist/.test(error.stderrTail))) throw error;
      }
    }
    throw new Error(`could not create target ${iqn} in ${CREATE_ATTEMPTS} attempts`);
  }

  async function ensureLun(target: TgtTarget, devicePath: string): Promise<void> {
    const current = target.luns.get(LUN);
    if (current === devicePath) return;
    if (current !== undefined) throw new Error(`target ${target.iqn} already serves ${current}, not ${devicePath}`);
    await tgtadm(
      '--op',
      'new',
      '--mode',
      'logicalunit',
      '--tid',
      String(target.tid),
      '--lun',
      String(LUN),
      '-b',
      devicePath,
    );
    target.luns.set(LUN, devicePath);
  }

  /** Exactly one initiator: it is bound, and any other entry (another name, an address, ALL) unbound. */
  async function ensureOnlyInitiator(target: TgtTarget, initiator: string): Promise<void> {
    const tid = String(target.tid);
    if (!target.acls.includes(initiator))
      await tgtadm('--op', 'bind', '--mode', 'target', '--tid', tid, '--initiator-name', initiator);
    for (const other of target.acls.filter((acl) => acl !== initiator)) {
      const which =
        other.startsWith('iqn.') || other.startsWith('eui.')
          ? ['--initiator-name', other]
          : ['--initiator-address', other];
      await tgtadm('--op', 'unbind', '--mode', 'target', '--tid', tid, ...which);
    }
    target.acls = [initiator];
  }

  async function find(volume: string): Promise<ExportInfo | undefined> {
    const iqn = targetIqn(prefix, nas, volume);
    const found = (await targets()).find((t) => t.iqn === iqn);
    return found && info(volume, found);
  }

  return {
    kind: 'tgt',
    find,

    async export(request: ExportRequest) {
      const iqn = targetIqn(prefix, nas, request.volume);
      const initiator = checkIqn('initiator', request.initiator);
      if (request.format && request.format !== 'raw')
        throw new Error(`tgt serves raw disks only; volume ${request.volume} is ${request.format}`);
      // Nothing can log in before the ACL is bound: a new tgt target admits no initiator.
      const target = await ensureTarget(iqn);
      await ensureLun(target, request.devicePath);
      await ensureOnlyInitiator(target, initiator);
      return info(request.volume, target);
    },

    async unexport(volume) {
      const iqn = targetIqn(prefix, nas, volume);
      const target = (await targets()).find((t) => t.iqn === iqn);
      if (!target) return;
      if (target.sessions > 0 && !config.force)
        throw new Error(`target ${iqn} still has ${target.sessions} initiator session(s); detach first`);
      await tgtadm(
        '--op',
        'delete',
        ...(config.force ? ['--force'] : []),
        '--mode',
        'target',
        '--tid',
        String(target.tid),
      );
    },

    async list() {
      const result: ExportInfo[] = [];
      for (const target of await targets()) {
        const volume = volumeOfTarget(prefix, nas, target.iqn);
        if (volume) result.push(info(volume, target));
      }
      return result;
    },
  };
}
