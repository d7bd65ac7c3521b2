/**
 * The cloud image registry as image-list subscriptions see it. OpenNebula and imgflow's own
 * catalog both implement it, with OpenNebula's image states and permission model, so a workflow
 * can lock, disable, rename, replace and restore an image the same way on either.
 */
import { InputError } from '../../../common/names.js';

/** OpenNebula's image states, in the order of their numbers (INIT = 0, READY = 1, ...). */
export const IMAGE_STATES = [
  'INIT',
  'READY',
  'USED',
  'DISABLED',
  'LOCKED',
  'ERROR',
  'CLONE',
  'DELETE',
  'USED_PERS',
  'LOCKED_USED',
  'LOCKED_USED_PERS',
] as const;
export type ImageState = (typeof IMAGE_STATES)[number];

export function stateFromNumber(n: number): ImageState {
  const state = IMAGE_STATES[n];
  if (!state) throw new InputError('STATE', `an image state number from 0 to ${IMAGE_STATES.length - 1}`, n);
  return state;
}

export type DiskFormat = 'qcow2' | 'raw';

/** Template attributes imgflow keeps on the images it registers. */
export const TEMPLATE = {
  imageList: 'IMGFLOW_IMAGELIST',
  image: 'IMGFLOW_IMAGE',
  uri: 'IMGFLOW_URI',
  sha512: 'IMGFLOW_SHA512',
  size: 'IMGFLOW_SIZE',
  version: 'IMGFLOW_VERSION',
  /** The subscription that registered the image, and its verified endorser: who may change it. */
  subscription: 'IMGFLOW_SUBSCRIPTION',
  endorser: 'IMGFLOW_ENDORSER',
} as const;

export interface RegistryImage {
  id: number;
  name: string;
  state: ImageState;
  ownerId: number;
  groupId: number;
  /** Three octal digits, owner/group/other; each digit is use (4) + manage (2) + admin (1). */
  mode: string;
  template: Record<string, string>;
}

export interface RegisterRequest {
  name: string;
  /** A file the registry can read (OpenNebula: as seen by its front-end). */
  path: string;
  format: DiskFormat;
  template: Record<string, string>;
}

export interface Ownership {
  /** -1 leaves it as it is. */
  userId: number;
  groupId: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

export interface ImageRegistry {
  /** The disk format images are converted to before registering. */
  readonly format: DiskFormat;
  /** All images; with `imageList`, only those whose template names that list. */
  list(filter?: { imageList?: string }): Promise<RegistryImage[]>;
  info(id: number): Promise<RegistryImage>;
  /** Returns the new image's id; it starts in INIT, see `waitReady`. */
  register(request: RegisterRequest): Promise<number>;
  rename(id: number, name: string): Promise<void>;
  chown(id: number, owner: Ownership): Promise<void>;
  chmod(id: number, mode: string): Promise<void>;
  setEnabled(id: number, enabled: boolean): Promise<void>;
  /**
   * Merges `attributes` into the image's template in place (an empty value blanks one): owner,
   * group, mode, state and disk stay as they are. OpenNebula: `one.image.update` in merge mode.
   */
  updateTemplate(id: number, attributes: Record<string, string>): Promise<void>;
  delete(id: number): Promise<void>;
  /** Until READY; ERROR or the timeout fail. */
  waitReady(id: number, options?: WaitOptions): Promise<RegistryImage>;
}

/** A registry refused or failed an operation; `code` is OpenNebula's error code when it has one. */
export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  constructor(
    readonly operation: string,
    message: string,
    readonly code?: number,
  ) {
    super(`${operation}: ${message}`);
  }
}

const MODE = /^[0-7]{3}$/;

export function checkMode(mode: unknown): string {
  if (typeof mode !== 'string' || !MODE.test(mode))
    throw new InputError('mode', 'three octal digits such as "640"', mode);
  return mode;
}

/** The nine permission bits, owner/group/other x use/manage/admin, in OpenNebula's order. */
export function modeToBits(mode: string): number[] {
  return [...checkMode(mode)].flatMap((digit) => {
    const d = Number(digit);
    return [(d >> 2) & 1, (d >> 1) & 1, d & 1];
  });
}

export function bitsToMode(bits: readonly number[]): string {
  if (bits.length !== 9) throw new InputError('permissions', 'nine bits', bits);
  let mode = '';
  for (let i = 0; i < 9; i += 3) mode += String((bits[i]! << 2) | (bits[i + 1]! << 1) | bits[i + 2]!);
  return mode;
}

/** Registry image names: list identifiers and their `_EXPIRED_` forms, nothing path-like. */
export function checkImageName(name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$/.test(name) || name.includes('..')) {
    throw new InputError('name', 'an image name of letters, digits, ".", "_", "+" or "-"', name);
  }
  return name;
}

/** Template attribute names: OpenNebula's upper-case identifiers. */
export function checkTemplateKey(key: string): string {
  if (!/^[A-Z][A-Z0-9_]{0,63}$/.test(key))
    throw new InputError('template', 'attribute names of upper-case letters, digits and "_"', key);
  return key;
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `info` until READY: shared by both registries so they time out and fail alike. */
export async function pollUntilReady(
  info: () => Promise<RegistryImage>,
  options: WaitOptions = {},
): Promise<RegistryImage> {
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  const interval = options.intervalMs ?? 2000;
  for (;;) {
    const image = await info();
    if (image.state === 'READY') return image;
    if (image.state === 'ERROR')
      throw new RegistryError('waitReady', `image ${image.id} (${image.name}) is in state ERROR`);
    if (Date.now() >= deadline)
      throw new RegistryError(
        'waitReady',
        `image ${image.id} (${image.name}) still ${image.state} after ${options.timeoutMs ?? 600_000} ms`,
      );
    await delay(interval);
  }
}
