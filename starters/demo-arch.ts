/**
 * The demo's second architecture: the demo image built again, for an arch other than the
 * machine's, by a builder worker of its own on `builder.<arch>`. On x86_64 that is i686: a kernel
 * with IA32 emulation runs i386 binaries itself, so it builds natively, as fast as x86_64; one
 * without it runs them through qemu-i386 (binfmt_misc, set up by the builder), no slower than
 * aarch64 through qemu-aarch64. Elsewhere it is x86_64, through qemu. Whether this machine can
 * build for it is asked before the demo starts anything.
 */
import fs from 'node:fs/promises';
import { builderPlatform, type ArchDeps } from '../activities/builder/arch.js';
import { archNames, type Arch, type BuildPlatform } from '../common/arch.js';
import type { VersionRecord } from '../common/lineage.js';
import { checkArch, InputError } from '../common/names.js';
import { machineArch } from '../lib/config.js';
import { demoImage } from './demo-recipe.js';
import { oneLine } from './output.js';

/** The demo's second arch on a machine of `machine`: i686 on x86_64 (natively where its kernel can), else x86_64. */
export function defaultSecondArch(machine: string = machineArch()): Arch {
  return machine === 'x86_64' ? 'i686' : 'x86_64';
}

/** The `--second-arch` asked for (default: defaultSecondArch), refused in one line when it is the machine's own. */
export function secondArchOption(value: string | undefined, machine: string = machineArch()): Arch {
  const arch = checkArch('--second-arch', value ?? defaultSecondArch(machine));
  if (arch === machine) throw new InputError('--second-arch', `an arch other than this machine's (${machine})`, arch);
  return arch;
}

/**
 * How this machine builds for `arch` (binfmt_misc set up for it when it is emulated), or one line
 * saying why it cannot, before the demo has done anything.
 */
export async function secondArchPlatform(arch: Arch, deps: ArchDeps): Promise<BuildPlatform> {
  try {
    return await builderPlatform(arch, deps);
  } catch (err) {
    throw new Error(`demo: ${demoImage(arch)} cannot be built for ${arch} on this machine: ${oneLine(err)}`);
  }
}

/** Installed packages by their Debian arch (`i386`, `all`, ...), from a version's stored package list. */
export async function packageArches(packagesFile: string): Promise<Record<string, number>> {
  const list = JSON.parse(await fs.readFile(packagesFile, 'utf8')) as { arch: string }[];
  const counts: Record<string, number> = {};
  for (const { arch } of list) counts[arch || 'none'] = (counts[arch || 'none'] ?? 0) + 1;
  return counts;
}

/**
 * Fails in one line unless the version is `arch`'s by its record (its arch and how it was built)
 * and by its content (packages of that arch in its package list).
 */
export function checkSecondArchVersion(version: VersionRecord, arch: Arch, packages: Record<string, number>): void {
  const image = `${demoImage(arch)}:${version.id}`;
  const built = version.provenance.build;
  if (version.arch !== arch || built?.arch !== arch)
    throw new Error(`demo: ${image} records arch ${version.arch} built for ${built?.arch ?? 'no arch'}, not ${arch}`);
  if (!packages[archNames(arch).debian])
    throw new Error(
      `demo: ${image} has no ${archNames(arch).debian} package installed (its packages: ${JSON.stringify(packages)})`,
    );
}

/** `90 installed: 78 i386, 12 all`. */
export function formatPackageArches(packages: Record<string, number>): string {
  const total = Object.values(packages).reduce((a, b) => a + b, 0);
  const parts = Object.entries(packages)
    .sort(([, a], [, b]) => b - a)
    .map(([arch, n]) => `${n} ${arch}`);
  return `${total} installed: ${parts.join(', ')}`;
}
