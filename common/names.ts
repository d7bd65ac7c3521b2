/**
 * Names that reach paths, commands and task queues. Everything a person or another system types is
 * checked here first, so that nothing with `/`, `..`, spaces or shell characters goes further.
 * Pure code: imported by workflows, activities and starters alike.
 */
import { ARCHES, type Arch } from './arch.js';

/** An error in what someone asked for: names the field and what was expected. Never retried. */
export class InputError extends Error {
  override readonly name = 'InputError';
  constructor(
    readonly field: string,
    readonly expected: string,
    readonly got?: unknown,
  ) {
    super(`${field}: expected ${expected}${got === undefined ? '' : `, got ${shown(got)}`}`);
  }
}

/** What was given, as the error shows it: a long value only by its start and its length, so the error stays one short line. */
function shown(got: unknown): string {
  const text = JSON.stringify(got) ?? String(got);
  return text.length <= 120
    ? text
    : `${text.slice(0, 60)}... (${typeof got === 'string' ? `${got.length} characters` : `${text.length} characters as JSON`})`;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const HOST = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Image, volume, tag and subscription names: lower-case letters, digits, `.`, `_`, `-`; at most 64. */
export function checkName(field: string, value: unknown): string {
  if (typeof value !== 'string' || !NAME.test(value) || value.includes('..')) {
    throw new InputError(
      field,
      'a name of 1-64 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit',
      value,
    );
  }
  return value;
}

/**
 * The longest image name. An image's names reach further than the name itself: each version's files
 * are `<image>-v<n>.<format>` and its builds `build-<image>-<n>`, and those must pass as names too.
 * Room is kept for five-digit version and build numbers and the longest format (`.squashfs`).
 */
export const IMAGE_NAME_MAX = 64 - '-v99999.squashfs'.length;

/** An image name whose derived names (its files, its builds) are names too: at most IMAGE_NAME_MAX. */
export function checkImageName(field: string, value: unknown): string {
  const name = checkName(field, value);
  if (name.length > IMAGE_NAME_MAX) {
    throw new InputError(
      field,
      `an image name of at most ${IMAGE_NAME_MAX} characters (its files are named <image>-v<n>.<format>, at most 64)`,
      value,
    );
  }
  return name;
}

/** Host and site names: one DNS label, as a task queue suffix and an iSCSI initiator part. */
export function checkHost(field: string, value: unknown): string {
  if (typeof value !== 'string' || !HOST.test(value)) {
    throw new InputError(field, 'a host name of 1-63 lower-case letters, digits or "-"', value);
  }
  return value;
}

export { ARCHES, type Arch };

export function checkArch(field: string, value: unknown): Arch {
  if (!ARCHES.includes(value as Arch)) throw new InputError(field, `one of ${ARCHES.join(', ')}`, value);
  return value as Arch;
}

/** Whole number within bounds, for sizes and counts typed by people. */
export function checkInt(field: string, value: unknown, min: number, max: number): number {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new InputError(field, `a whole number from ${min} to ${max}`, value);
  }
  return n;
}

/** A transfer speed limit in bytes per second (a volume's upload or download speed). */
export function checkSpeed(field: string, value: unknown): number {
  return checkInt(field, value, 1, 100 * 1024 ** 3);
}

/** A transfer's optional speed limit, checked, as the options spread into the transfer. */
export const speedLimit = (bytesPerSecond: number | undefined): { bytesPerSecond?: number } =>
  bytesPerSecond === undefined ? {} : { bytesPerSecond: checkSpeed('bytesPerSecond', bytesPerSecond) };
