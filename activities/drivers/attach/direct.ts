/**
 * Attach kinds that make nothing on the compute host: qemu or libvirt open the volume themselves
 * (iscsi:// through libiscsi, nbd:// through qemu's NBD client), or the volume is a local path.
 * Attaching checks the volume is reachable and reads its size; detaching has nothing to undo.
 */
import { checkName } from '../../../common/names.js';
import { exists } from '../../../lib/files.js';
import { CommandError, type Run } from '../../runner.js';
import { checkIqn, parseIscsiUrl, parseNbdUrl } from '../naming.js';
import type { AttachDriver, AttachRequest, Attachment } from '../types.js';

export interface IscsiDirectAttachConfig {
  run: Run;
  /** The initiator name qemu will use; the export admits this one only. */
  initiatorName: string;
}

/** Runs a probe; a failed one means "not reachable", anything else (a missing tool) is an error. */
async function reachable(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (error) {
    if (error instanceof CommandError && error.exitCode !== undefined) return false;
    throw error;
  }
}

function checkVolume(request: AttachRequest): void {
  checkName('volume', request.volume);
}

/**
 * An attach kind whose "attachment" is the URL itself: attaching reads the size through it,
 * detaching has nothing to undo, and it is attached while the size can be read.
 */
function urlAttach(kind: 'iscsi-direct' | 'nbd-direct', size: (url: string) => Promise<number>): AttachDriver {
  return {
    kind,
    async attach(request): Promise<Attachment> {
      checkVolume(request);
      return { kind, volume: request.volume, url: request.url, sizeBytes: await size(request.url) };
    },
    async detach(request) {
      checkVolume(request);
    },
    async isAttached(request) {
      checkVolume(request);
      return reachable(() => size(request.url));
    },
  };
}

export function createIscsiDirectAttach(config: IscsiDirectAttachConfig): AttachDriver {
  const initiator = checkIqn('initiatorName', config.initiatorName);
  return urlAttach('iscsi-direct', async (url) => {
    parseIscsiUrl(url);
    const { stdout } = await config.run(['iscsi-readcapacity16', '-s', `--initiator-name=${initiator}`, url], {
      timeoutMs: 30_000,
    });
    const bytes = Number(stdout.trim());
    if (!Number.isSafeInteger(bytes) || bytes <= 0)
      throw new Error(`unexpected capacity from ${url}: ${stdout.trim()}`);
    return bytes;
  });
}

export function createNbdDirectAttach(config: { run: Run }): AttachDriver {
  return urlAttach('nbd-direct', async (url) => {
    parseNbdUrl(url);
    const bytes = Number((await config.run(['nbdinfo', '--size', url], { timeoutMs: 30_000 })).stdout.trim());
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`unexpected size from ${url}`);
    return bytes;
  });
}

/** The volume is a file or device on this host (the local store, or a `none` export). */
export function createLocalAttach(config: { run: Run }): AttachDriver {
  async function size(file: string): Promise<number> {
    if (!file.startsWith('/')) throw new Error(`local volume path must be absolute: ${file}`);
    const raw = JSON.parse(
      (await config.run(['qemu-img', 'info', '-U', '--output=json', '--', file])).stdout,
    ) as Record<string, unknown>;
    return Number(raw['virtual-size']);
  }

  return {
    kind: 'local',
    async attach(request): Promise<Attachment> {
      checkVolume(request);
      return { kind: 'local', volume: request.volume, device: request.url, sizeBytes: await size(request.url) };
    },
    async detach(request) {
      checkVolume(request);
    },
    async isAttached(request) {
      checkVolume(request);
      return exists(request.url);
    },
  };
}
