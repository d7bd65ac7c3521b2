/**
 * Architectures under every name they go by: the kernel's (`uname -m`, imgflow's own and its task
 * queues'), Debian's (debootstrap, dpkg), Node's (`process.arch`), QEMU's, and the ELF header's.
 * Which builds a machine runs natively and which through an emulator follows from them.
 * Pure code: imported by workflows, activities and starters alike.
 */

/** imgflow's names: the kernel's. x86_64 and aarch64 first, as errors have always listed them. */
export const ARCHES = ['x86_64', 'aarch64', 'i686', 'ppc64le', 's390x', 'riscv64'] as const;
export type Arch = (typeof ARCHES)[number];

export interface ArchNames {
  /** Debian's name (`debootstrap --arch`, dpkg's `Architecture:`). */
  debian: string;
  /** Node's `process.arch`. */
  node: string;
  /** QEMU's user-mode emulator: `qemu-<name>-static`, binfmt_misc handler `qemu-<name>`. */
  qemu: string;
  /** The ELF header's e_machine, word size (EI_CLASS: 1 = 32-bit, 2 = 64-bit) and byte order (EI_DATA: 1 little, 2 big). */
  elf: { machine: number; class: 1 | 2; data: 1 | 2 };
}

const NAMES: Record<Arch, ArchNames> = {
  x86_64: { debian: 'amd64', node: 'x64', qemu: 'x86_64', elf: { machine: 62, class: 2, data: 1 } },
  aarch64: { debian: 'arm64', node: 'arm64', qemu: 'aarch64', elf: { machine: 183, class: 2, data: 1 } },
  i686: { debian: 'i386', node: 'ia32', qemu: 'i386', elf: { machine: 3, class: 1, data: 1 } },
  ppc64le: { debian: 'ppc64el', node: 'ppc64', qemu: 'ppc64le', elf: { machine: 21, class: 2, data: 1 } },
  s390x: { debian: 's390x', node: 's390x', qemu: 's390x', elf: { machine: 22, class: 2, data: 2 } },
  riscv64: { debian: 'riscv64', node: 'riscv64', qemu: 'riscv64', elf: { machine: 243, class: 2, data: 1 } },
};

/** What each machine runs without an emulator: its own binaries, and x86_64 also i686's. */
const NATIVE: Record<Arch, readonly Arch[]> = {
  x86_64: ['x86_64', 'i686'],
  aarch64: ['aarch64'],
  i686: ['i686'],
  ppc64le: ['ppc64le'],
  s390x: ['s390x'],
  riscv64: ['riscv64'],
};

export const isArch = (value: unknown): value is Arch => ARCHES.includes(value as Arch);

export const archNames = (arch: Arch): ArchNames => NAMES[arch];

/** Debian's name of an architecture: `i686` -> `i386`, `aarch64` -> `arm64`, `x86_64` -> `amd64`. */
export const debianArch = (arch: Arch): string => NAMES[arch].debian;

/** imgflow's name of a Debian architecture, undefined for one imgflow does not build. */
export function archFromDebian(debian: string): Arch | undefined {
  return ARCHES.find((arch) => NAMES[arch].debian === debian);
}

/** imgflow's name of Node's `process.arch` (`x64` -> `x86_64`); other values as they are. */
export function archFromNode(nodeArch: string): string {
  return ARCHES.find((arch) => NAMES[arch].node === nodeArch) ?? nodeArch;
}

/** imgflow's name of what `uname -m` prints (`i386`/`i586`/`i686` -> `i686`, `arm64` -> `aarch64`); other values as they are. */
export function archFromUname(machine: string): string {
  if (/^i[3-6]86$/.test(machine)) return 'i686';
  if (machine === 'arm64') return 'aarch64';
  if (machine === 'amd64') return 'x86_64';
  return machine;
}

/** The architecture an ELF header's e_machine, class and byte order name, if imgflow builds for it. */
export function archFromElf(machine: number, elfClass: number, data: number): Arch | undefined {
  return ARCHES.find(
    (arch) =>
      NAMES[arch].elf.machine === machine && NAMES[arch].elf.class === elfClass && NAMES[arch].elf.data === data,
  );
}

export type BuildMode = 'native' | 'emulated';

/** How a machine of `machine` (imgflow's name) builds for `target`: natively or through an emulator. */
export function buildMode(machine: string, target: Arch): BuildMode {
  return isArch(machine) && NATIVE[machine].includes(target) ? 'native' : 'emulated';
}

/** How a version was built, as its provenance records it (versions built before this have none). */
export interface BuildPlatform {
  /** The architecture the builder built for (its queue's). */
  arch: Arch;
  /** The builder machine's own architecture (`uname -m`, in imgflow's words). */
  machine: string;
  mode: BuildMode;
  /** For an emulated build: the binfmt_misc handler and the emulator's version, e.g. `qemu-aarch64: qemu-aarch64 version 7.2.19`. */
  emulator?: string;
}

/** A build platform as people read it: `aarch64, emulated on x86_64 (qemu-aarch64: qemu-aarch64 version 7.2.19)`. */
export function describePlatform(p: BuildPlatform): string {
  return `${p.arch}, ${p.mode} on ${p.machine}${p.emulator ? ` (${p.emulator})` : ''}`;
}
