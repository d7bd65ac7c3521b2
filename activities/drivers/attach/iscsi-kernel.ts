/**
 * Attach through the kernel's iSCSI initiator (open-iscsi): discovery, login, then the SCSI disk
 * the session brings up, found in `iscsiadm -m session -P 3`. For production compute hosts; the
 * initiator name is the host's own (/etc/iscsi/initiatorname.iscsi), the one the export admits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Run } from '../../runner.js';
import { parseIscsiUrl } from '../naming.js';
import type { AttachDriver, AttachRequest, Attachment } from '../types.js';

export interface IscsiKernelAttachConfig {
  run: Run;
  /** How long the disk may take to appear after login. */
  deviceTimeoutMs?: number;
  pollMs?: number;
}

export interface IscsiSession {
  iqn: string;
  /** host:port, as iscsiadm prints the current portal. */
  portal: string;
  sid: number;
  loggedIn: boolean;
  /** LUN -> kernel disk name (`sdc`). */
  disks: Map<number, string>;
}

/** iscsiadm's exit codes: 15 a session exists already, 21 no records/sessions found. */
const SESSION_EXISTS = 15;
const NO_OBJECTS = 21;
const DEFAULT_PORT = 3260;

/** Reads `iscsiadm -m session -P 3`: per target, its portal, state and the disks of its LUNs. */
export function parseSessions(stdout: string): IscsiSession[] {
  const sessions: IscsiSession[] = [];
  let current: IscsiSession | undefined;
  let lun: number | undefined;
  for (const line of stdout.split('\n')) {
    const text = line.trim();
    const target = /^Target: (\S+)/.exec(text);
    if (target) {
      current = { iqn: target[1]!, portal: '', sid: 0, loggedIn: false, disks: new Map() };
      sessions.push(current);
      lun = undefined;
      continue;
    }
    if (!current) continue;
    const portal = /^Current Portal: (\S+?)(,\d+)?$/.exec(text);
    if (portal) current.portal = portal[1]!;
    const sid = /^SID: (\d+)$/.exec(text);
    if (sid) current.sid = Number(sid[1]);
    if (/^iSCSI Session State: LOGGED_IN$/.test(text)) current.loggedIn = true;
    const lunLine = /^scsi\d+ Channel \d+ Id \d+ Lun: (\d+)$/.exec(text);
    if (lunLine) lun = Number(lunLine[1]);
    const disk = /^Attached scsi disk (\S+)/.exec(text);
    if (disk && lun !== undefined) current.disks.set(lun, disk[1]!);
  }
  return sessions;
}

/** `host:port` with the default iSCSI port filled in, as iscsiadm prints and expects it. */
export function withPort(portal: string): string {
  return /:\d+$/.test(portal) ? portal : `${portal}:${DEFAULT_PORT}`;
}

export function createIscsiKernelAttach(config: IscsiKernelAttachConfig): AttachDriver {
  const { run } = config;
  const deviceTimeoutMs = config.deviceTimeoutMs ?? 30_000;
  const pollMs = config.pollMs ?? 500;

  async function sessions(): Promise<IscsiSession[]> {
    const result = await run(['iscsiadm', '-m', 'session', '-P', '3'], { okExitCodes: [NO_OBJECTS] });
    return result.exitCode === NO_OBJECTS ? [] : parseSessions(result.stdout);
  }

  async function sessionFor(
    request: AttachRequest,
  ): Promise<{ session?: IscsiSession; lun: number; iqn: string; portal: string }> {
    const { iqn, lun, portal } = parseIscsiUrl(request.url);
    const session = (await sessions()).find((s) => s.iqn === iqn && s.loggedIn);
    return { ...(session ? { session } : {}), lun, iqn, portal: withPort(portal) };
  }

  async function login(iqn: string, portal: string): Promise<void> {
    await run(['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', portal]);
    await run(['iscsiadm', '-m', 'node', '-T', iqn, '-p', portal, '--login'], { okExitCodes: [SESSION_EXISTS] });
  }

  /** The kernel names the disk a moment after login (SCSI scan, udev): poll for it. */
  async function waitForDisk(request: AttachRequest): Promise<string> {
    const deadline = Date.now() + deviceTimeoutMs;
    for (;;) {
      const { session, lun, iqn } = await sessionFor(request);
      const disk = session?.disks.get(lun);
      if (disk) return `/dev/${disk}`;
      if (Date.now() > deadline)
        throw new Error(`no disk for LUN ${lun} of ${iqn} within ${deviceTimeoutMs} ms of login`);
      await sleep(pollMs);
    }
  }

  return {
    kind: 'iscsi-kernel',

    async attach(request): Promise<Attachment> {
      const { session, iqn, portal } = await sessionFor(request);
      if (!session) await login(iqn, portal);
      const device = await waitForDisk(request);
      const sizeBytes = Number((await run(['blockdev', '--getsize64', device])).stdout.trim());
      return { kind: 'iscsi-kernel', volume: request.volume, device, sizeBytes };
    },

    /** Logs out and forgets the node record, so the host does not log back in at boot. */
    async detach(request) {
      const { session, iqn, portal } = await sessionFor(request);
      if (session)
        await run(['iscsiadm', '-m', 'node', '-T', iqn, '-p', portal, '--logout'], { okExitCodes: [NO_OBJECTS] });
      await run(['iscsiadm', '-m', 'node', '-T', iqn, '-p', portal, '-o', 'delete'], { okExitCodes: [NO_OBJECTS] });
    },

    async isAttached(request) {
      return (await sessionFor(request)).session !== undefined;
    },
  };
}
