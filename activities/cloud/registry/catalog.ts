/**
 * imgflow's own image registry: one JSON record per image under `<dir>/images/` and the disk under
 * `<dir>/disks/`, with OpenNebula's states, owner/group/mode and rules, so subscriptions treat it as
 * they treat OpenNebula. Every record is written atomically (temporary file, then rename); changes
 * are serialised within the process that owns the directory.
 */
import { homeModes, privateDir, type FileModes } from '../../../lib/modes.js';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../../../common/names.js';
import { exists } from '../../../lib/files.js';
import {
  checkImageName,
  checkMode,
  checkTemplateKey,
  pollUntilReady,
  RegistryError,
  TEMPLATE,
  type DiskFormat,
  type ImageRegistry,
  type ImageState,
  type Ownership,
  type RegisterRequest,
  type RegistryImage,
  type WaitOptions,
} from './types.js';

export interface CatalogOptions {
  dir: string;
  format?: DiskFormat;
  /** Owner and group of new images. */
  ownerId?: number;
  groupId?: number;
  /** Who may read the catalog's disks and records (default: their owner only, unless IMGFLOW_HOME_MODE widens it). */
  modes?: FileModes;
}

interface CatalogRecord extends RegistryImage {
  format: DiskFormat;
  /** The disk inside the catalog; absent until the copy is complete. */
  disk?: string;
  runningVms: number;
  registeredAt: string;
  /** The process copying the disk in while the image is INIT; if it died, the copy never ends. */
  copierPid?: number;
}

/** Whether a process still runs; a signal 0 tests without touching it. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** OpenNebula's code for a missing object, so callers can treat both registries alike. */
const NO_EXISTS = 0x400;
const IN_USE: ImageState[] = ['USED', 'USED_PERS', 'LOCKED_USED', 'LOCKED_USED_PERS'];
/** OpenNebula's default for new images (umask 177): owner use and manage. */
const DEFAULT_MODE = '600';

export class CatalogRegistry implements ImageRegistry {
  readonly format: DiskFormat;
  private readonly imagesDir: string;
  private readonly disksDir: string;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly modes: FileModes;

  constructor(private readonly options: CatalogOptions) {
    this.format = options.format ?? 'qcow2';
    this.imagesDir = path.join(options.dir, 'images');
    this.disksDir = path.join(options.dir, 'disks');
    this.modes = options.modes ?? homeModes();
  }

  /** Runs read-modify-write steps one at a time, so two changes never lose each other. */
  private serialised<T>(step: () => Promise<T>): Promise<T> {
    const next = this.queue.then(step, step);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private recordPath(id: number): string {
    if (!Number.isSafeInteger(id) || id < 0) throw new InputError('id', 'a non-negative image id', id);
    return path.join(this.imagesDir, `${id}.json`);
  }

  private async read(id: number, operation: string): Promise<CatalogRecord> {
    try {
      return JSON.parse(await fs.readFile(this.recordPath(id), 'utf8')) as CatalogRecord;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT')
        throw new RegistryError(operation, `image ${id} does not exist`, NO_EXISTS);
      throw error;
    }
  }

  private async write(record: CatalogRecord): Promise<void> {
    const target = this.recordPath(record.id);
    const temporary = path.join(this.imagesDir, `.${record.id}.${randomUUID()}.tmp`);
    await fs.writeFile(temporary, `${JSON.stringify(record, null, 2)}\n`, { mode: this.modes.file });
    await fs.rename(temporary, target);
  }

  private update(id: number, operation: string, change: (record: CatalogRecord) => void): Promise<void> {
    return this.serialised(async () => {
      const record = await this.read(id, operation);
      change(record);
      await this.write(record);
    });
  }

  private async records(): Promise<CatalogRecord[]> {
    await privateDir(this.imagesDir, this.modes);
    const names = (await fs.readdir(this.imagesDir)).filter((n) => /^\d+\.json$/.test(n));
    const records = await Promise.all(
      names.map((n) => this.read(Number(n.slice(0, -5)), 'list').catch(() => undefined)),
    );
    return records.filter((r): r is CatalogRecord => r !== undefined).sort((a, b) => a.id - b.id);
  }

  /** An INIT image whose copying process died is shown as ERROR, so that waiting for it ends and it can be deleted. */
  private static publicView(record: CatalogRecord): RegistryImage {
    const { id, name, ownerId, groupId, mode, template } = record;
    const orphaned = record.state === 'INIT' && record.copierPid !== undefined && !processAlive(record.copierPid);
    return { id, name, state: orphaned ? 'ERROR' : record.state, ownerId, groupId, mode, template };
  }

  private async refuseDuplicate(name: string, ownerId: number, operation: string, except?: number): Promise<void> {
    const clash = (await this.records()).find((r) => r.name === name && r.ownerId === ownerId && r.id !== except);
    if (clash) throw new RegistryError(operation, `name ${name} is already taken by image ${clash.id}`);
  }

  async list(filter: { imageList?: string } = {}): Promise<RegistryImage[]> {
    const all = (await this.records()).map((record) => CatalogRegistry.publicView(record));
    return filter.imageList === undefined
      ? all
      : all.filter((image) => image.template[TEMPLATE.imageList] === filter.imageList);
  }

  async info(id: number): Promise<RegistryImage> {
    return CatalogRegistry.publicView(await this.read(id, 'info'));
  }

  /** The disk of a READY image, for the hosts that boot from the catalog. */
  async diskPath(id: number): Promise<string> {
    const record = await this.read(id, 'diskPath');
    if (!record.disk) throw new RegistryError('diskPath', `image ${id} has no disk yet (state ${record.state})`);
    return record.disk;
  }

  /** Allocates the record in INIT, copies the disk in, then marks it READY (ERROR if the copy fails). */
  async register(request: RegisterRequest): Promise<number> {
    const name = checkImageName(request.name);
    for (const key of Object.keys(request.template)) checkTemplateKey(key);
    if (!(await exists(request.path))) throw new RegistryError('register', `no file at ${request.path}`);
    const ownerId = this.options.ownerId ?? 0;
    const id = await this.serialised(async () => {
      await this.refuseDuplicate(name, ownerId, 'register');
      const record: CatalogRecord = {
        id: await this.allocateId(),
        name,
        state: 'INIT',
        ownerId,
        groupId: this.options.groupId ?? 0,
        mode: DEFAULT_MODE,
        template: { ...request.template },
        format: request.format,
        runningVms: 0,
        registeredAt: new Date().toISOString(),
        copierPid: process.pid,
      };
      await this.write(record);
      return record.id;
    });
    try {
      const disk = await this.copyDisk(id, request);
      await this.update(id, 'register', (record) => {
        record.disk = disk;
        record.state = 'READY';
        delete record.copierPid;
      });
    } catch (error) {
      await this.update(id, 'register', (record) => void (record.state = 'ERROR'));
      throw new RegistryError(
        'register',
        `copying ${request.path} into the catalog failed: ${(error as Error).message}`,
      );
    }
    return id;
  }

  /** The next free id, claimed by creating its record exclusively. */
  /**
   * The next id: never one a deleted image had, as OpenNebula never reuses ids, so a retried
   * delete or rename of an old id can never reach a newer image. `last-id` keeps the high-water mark.
   */
  private async allocateId(): Promise<number> {
    const mark = path.join(this.options.dir, 'last-id');
    const last = Number((await fs.readFile(mark, 'utf8').catch(() => '-1')).trim());
    const ids = (await this.records()).map((r) => r.id);
    for (let id = Math.max(last, ...ids) + 1; ; id++) {
      try {
        await (await fs.open(this.recordPath(id), 'wx')).close();
        const temporary = `${mark}.${randomUUID()}.tmp`;
        await fs.writeFile(temporary, `${id}\n`);
        await fs.rename(temporary, mark);
        return id;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
    }
  }

  private async copyDisk(id: number, request: RegisterRequest): Promise<string> {
    await privateDir(this.disksDir, this.modes);
    const disk = path.join(this.disksDir, `${id}.${request.format}`);
    const partial = `${disk}.partial`;
    await fs.copyFile(request.path, partial);
    // A copy takes the source's mode: a catalog disk is its owner's only, whatever it was made from.
    await fs.chmod(partial, this.modes.file);
    await fs.rename(partial, disk);
    return disk;
  }

  async rename(id: number, name: string): Promise<void> {
    checkImageName(name);
    // The uniqueness check and the write happen in one step, so two renames cannot both take a name.
    await this.serialised(async () => {
      const record = await this.read(id, 'rename');
      if (record.name === name) return;
      await this.refuseDuplicate(name, record.ownerId, 'rename', id);
      record.name = name;
      await this.write(record);
    });
  }

  async chown(id: number, owner: Ownership): Promise<void> {
    await this.update(id, 'chown', (record) => {
      if (owner.userId >= 0) record.ownerId = owner.userId;
      if (owner.groupId >= 0) record.groupId = owner.groupId;
    });
  }

  async chmod(id: number, mode: string): Promise<void> {
    checkMode(mode);
    await this.update(id, 'chmod', (record) => void (record.mode = mode));
  }

  /** As OpenNebula: only READY, DISABLED and ERROR images can be enabled or disabled. */
  async setEnabled(id: number, enabled: boolean): Promise<void> {
    await this.update(id, 'setEnabled', (record) => {
      if (!['READY', 'DISABLED', 'ERROR'].includes(record.state)) {
        throw new RegistryError(
          'setEnabled',
          `image ${id} cannot be ${enabled ? 'enabled' : 'disabled'} in state ${record.state}`,
        );
      }
      record.state = enabled ? 'READY' : 'DISABLED';
    });
  }

  async updateTemplate(id: number, attributes: Record<string, string>): Promise<void> {
    for (const key of Object.keys(attributes)) checkTemplateKey(key);
    await this.update(id, 'updateTemplate', (record) => void Object.assign(record.template, attributes));
  }

  /** Hosts booting from the catalog mark an image used, which keeps it from being deleted. */
  async setRunning(id: number, running: number): Promise<void> {
    await this.update(id, 'setRunning', (record) => {
      record.runningVms = running;
      if (running > 0 && record.state === 'READY') record.state = 'USED';
      if (running === 0 && record.state === 'USED') record.state = 'READY';
    });
  }

  async delete(id: number): Promise<void> {
    await this.serialised(async () => {
      const record = await this.read(id, 'delete');
      if (IN_USE.includes(record.state) || record.runningVms > 0) {
        throw new RegistryError(
          'delete',
          `image ${id} cannot be deleted in state ${record.state}, it is used by ${record.runningVms} hosts`,
        );
      }
      // The record goes first: a crash in between leaves an orphan disk, never a record without one.
      await fs.rm(this.recordPath(id));
      if (record.disk) await fs.rm(record.disk, { force: true });
      // A copy cut short leaves its partial file behind.
      await fs.rm(path.join(this.disksDir, `${id}.${record.format}.partial`), { force: true });
    });
  }

  waitReady(id: number, options?: WaitOptions): Promise<RegistryImage> {
    return pollUntilReady(() => this.info(id), { intervalMs: 100, ...options });
  }
}
