/**
 * What a builder needs to build for its architecture, and what it tells about it. A machine builds
 * its own architecture natively, and x86_64 also i686 when its kernel runs 32-bit binaries (a
 * kernel built without IA32 emulation does not: a tiny i386 program tells); any other through
 * QEMU's user-mode emulator, started by the kernel's binfmt_misc for the image's binaries, chroot
 * included.
 *
 * binfmt_misc is machine-wide and shared with whoever else runs foreign binaries here: a handler
 * already there for the architecture is used as it is, one is registered (from the distribution's
 * own definition, qemu-user-static's `/usr/lib/binfmt.d/qemu-<arch>.conf`) only when none is, and
 * nothing is ever unregistered, disabled or changed.
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { archFromElf, archFromUname, archNames, buildMode, type Arch, type BuildPlatform } from '../../common/arch.js';
import type { HostActivities } from '../host.js';
import type { Run } from '../runner.js';

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';
/** qemu-user-static's emulator for i386, for x86_64 kernels that cannot run i386 binaries themselves. */
const I386_EMULATOR = '/usr/bin/qemu-i386-static';
/** Where qemu-user-static (Debian) keeps its handlers' definitions; systemd-binfmt reads them from there. */
export const BINFMT_DEFINITIONS = ['/usr/lib/binfmt.d', '/etc/binfmt.d'];

export interface ArchDeps {
  run: Run;
  /** The machine's architecture in imgflow's words (default: `uname -m`). */
  machine?: string;
  binfmtDir?: string;
  definitionDirs?: string[];
  /** Whether this x86_64 kernel runs i386 binaries itself (default: tried with a tiny program). */
  runsI386?: (run: Run) => Promise<boolean>;
}

/** A binfmt_misc handler: as a registration line defines it, or as the kernel shows it. */
export interface BinfmtHandler {
  name: string;
  enabled: boolean;
  interpreter: string;
  flags: string;
  offset: number;
  magic: Buffer;
  mask?: Buffer;
}

/** `\x7f` escapes of a registration line's magic and mask, as the kernel reads them. */
function unescape(text: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && text[i + 1] === 'x' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
      bytes.push(parseInt(text.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (text[i] === '\\' && text[i + 1] === '\\') {
      bytes.push(0x5c);
      i += 1;
    } else bytes.push(text.charCodeAt(i));
  }
  return Buffer.from(bytes);
}

/** A registration line `:name:M:offset:magic:mask:interpreter:flags` (the first character is the separator). */
export function parseRegistration(line: string): BinfmtHandler {
  const sep = line[0];
  const fields = sep ? line.trim().slice(1).split(sep) : [];
  const [name, type, offset, magic, mask, interpreter, flags = ''] = fields;
  if (fields.length < 6 || type !== 'M' || !name || !magic || !interpreter)
    throw new Error(
      `binfmt_misc: expected a magic-type registration line ":name:M:offset:magic:mask:interpreter:flags", got ${JSON.stringify(line.slice(0, 120))}`,
    );
  return {
    name,
    enabled: true,
    interpreter,
    flags,
    offset: Number(offset || 0),
    magic: unescape(magic),
    ...(mask ? { mask: unescape(mask) } : {}),
  };
}

/** A handler as `/proc/sys/fs/binfmt_misc/<name>` shows it. */
export function parseHandlerStatus(name: string, text: string): BinfmtHandler | undefined {
  const lines = text.split('\n');
  const field = (key: string) =>
    lines
      .find((line) => line.startsWith(`${key} `) || line.startsWith(`${key}:`))
      ?.slice(key.length + 1)
      .trim();
  const magic = field('magic');
  const interpreter = field('interpreter');
  // Extension handlers (type E) have no magic: they never match an ELF header.
  if (!magic || !interpreter) return undefined;
  const mask = field('mask');
  return {
    name,
    enabled: lines[0]?.trim() === 'enabled',
    interpreter,
    flags: field('flags') ?? '',
    offset: Number(field('offset') ?? 0),
    magic: Buffer.from(magic, 'hex'),
    ...(mask ? { mask: Buffer.from(mask, 'hex') } : {}),
  };
}

/** Whether `handler` takes a file that starts with `header`, as the kernel decides it. */
export function handlerMatches(handler: BinfmtHandler, header: Buffer): boolean {
  return handler.magic.every((byte, i) => {
    const m = handler.mask?.[i] ?? 0xff;
    const at = header[handler.offset + i];
    return at !== undefined && (at & m) === (byte & m);
  });
}

const exists = (file: string) =>
  fs.access(file, constants.F_OK).then(
    () => true,
    () => false,
  );

/** The distribution's definition of the handler for `arch`, from qemu-user-static. */
async function definitionOf(arch: Arch, dirs: string[]): Promise<BinfmtHandler> {
  const file = `qemu-${archNames(arch).qemu}.conf`;
  for (const dir of dirs) {
    const text = await fs.readFile(path.join(dir, file), 'utf8').catch(() => undefined);
    const line = text?.split('\n').find((l) => l.trim() && !/^[#;]/.test(l.trim()));
    if (line) return parseRegistration(line.trim());
  }
  // Debian registers no i386 handler on x86_64, whose kernel usually runs i386 itself; one without
  // IA32 emulation needs it: QEMU's own definition, with the static emulator opened at registration.
  if (arch === 'i686' && (await exists(I386_EMULATOR)))
    return parseRegistration(
      `:qemu-i386:M::\\x7fELF\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x03\\x00:\\xff\\xff\\xff\\xff\\xff\\xfe\\xfe\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:${I386_EMULATOR}:F`,
    );
  throw new Error(
    `builder for ${arch}: qemu-user-static is not installed (no ${file} in ${dirs.join(' or ')}); run scripts/setup.sh or apt-get install qemu-user-static`,
  );
}

/** The start of a binary the handler is meant for: its magic at its offset. */
function sampleOf(handler: BinfmtHandler): Buffer {
  const sample = Buffer.alloc(handler.offset + handler.magic.length);
  handler.magic.copy(sample, handler.offset);
  return sample;
}

/** The handlers binfmt_misc has now, by name. */
async function handlers(dir: string): Promise<BinfmtHandler[]> {
  const names = (await fs.readdir(dir)).filter((name) => name !== 'register' && name !== 'status');
  const found = await Promise.all(
    names.map(async (name) =>
      parseHandlerStatus(name, await fs.readFile(path.join(dir, name), 'utf8').catch(() => '')),
    ),
  );
  return found.filter((h): h is BinfmtHandler => h !== undefined);
}

/**
 * The binfmt_misc handler that runs `arch`'s binaries on this machine: binfmt_misc mounted if it
 * is not, a handler registered if none is there. Fails in one line when it cannot be had, or when
 * the handler there could not start binaries in a chroot (no `F` flag).
 */
export async function ensureEmulation(arch: Arch, deps: ArchDeps): Promise<BinfmtHandler> {
  const dir = deps.binfmtDir ?? BINFMT_DIR;
  const wanted = await definitionOf(arch, deps.definitionDirs ?? BINFMT_DEFINITIONS);
  const sample = sampleOf(wanted);
  if (!(await exists(path.join(dir, 'register')))) {
    await deps.run(['mount', '-t', 'binfmt_misc', 'binfmt_misc', dir]).catch(async (err: unknown) => {
      // Another builder may have mounted it meanwhile.
      if (!(await exists(path.join(dir, 'register'))))
        throw new Error(
          `builder for ${arch}: cannot mount binfmt_misc on ${dir}: ${(err as Error).message.split('\n')[0]}`,
        );
    });
  }
  if ((await fs.readFile(path.join(dir, 'status'), 'utf8').catch(() => 'enabled')).trim() === 'disabled') {
    throw new Error(
      `builder for ${arch}: binfmt_misc is disabled on this machine (${dir}/status); enable it to build ${arch} images here`,
    );
  }
  const usable = async () => (await handlers(dir)).find((h) => h.enabled && handlerMatches(h, sample));
  let handler = await usable();
  if (!handler) {
    const clash = (await handlers(dir)).find((h) => h.name === wanted.name);
    if (clash)
      throw new Error(
        `builder for ${arch}: the binfmt_misc handler ${wanted.name} is there but disabled; enable it (echo 1 > ${dir}/${wanted.name}) to build ${arch} images here`,
      );
    if (!(await exists(wanted.interpreter)))
      throw new Error(
        `builder for ${arch}: the emulator ${wanted.interpreter} is missing; run scripts/setup.sh or apt-get install qemu-user-static`,
      );
    await fs
      .writeFile(
        path.join(dir, 'register'),
        `:${wanted.name}:M:${wanted.offset}:${escapeBytes(wanted.magic)}:${wanted.mask ? escapeBytes(wanted.mask) : ''}:${wanted.interpreter}:${wanted.flags}`,
      )
      .catch((err: NodeJS.ErrnoException) => {
        // Registered by another builder meanwhile: taken below like any other.
        if (err.code !== 'EEXIST')
          throw new Error(
            `builder for ${arch}: cannot register the binfmt_misc handler ${wanted.name}: ${err.message}`,
          );
      });
    handler = await usable();
    if (!handler)
      throw new Error(
        `builder for ${arch}: binfmt_misc shows no enabled handler for ${arch} binaries after registering ${wanted.name}`,
      );
  }
  if (!handler.flags.includes('F')) {
    throw new Error(
      `builder for ${arch}: the binfmt_misc handler ${handler.name} (${handler.interpreter}) lacks the F flag, so it cannot start ${arch} binaries inside a build's chroot; register it with F (as qemu-user-static's ${wanted.name}.conf does)`,
    );
  }
  return handler;
}

/** An i386 ELF program of one instruction sequence: `exit(0)` through `int 0x80`. */
function i386Exit0(): Buffer {
  const base = 0x08048000;
  const code = Buffer.from([0x31, 0xdb, 0xb8, 0x01, 0, 0, 0, 0xcd, 0x80]);
  const header = Buffer.alloc(52 + 32);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]).copy(header);
  header.writeUInt16LE(2, 16); // executable
  header.writeUInt16LE(3, 18); // EM_386
  header.writeUInt32LE(1, 20);
  header.writeUInt32LE(base + header.length, 24); // entry
  header.writeUInt32LE(52, 28); // program headers
  header.writeUInt16LE(52, 40);
  header.writeUInt16LE(32, 42);
  header.writeUInt16LE(1, 44);
  const size = header.length + code.length;
  [1, 0, base, base, size, size, 5, 0x1000].forEach((v, i) => header.writeUInt32LE(v, 52 + 4 * i));
  return Buffer.concat([header, code]);
}

/** Whether the kernel starts i386 binaries itself: a tiny one is run; an error or a non-zero exit says no. */
export async function kernelRunsI386(run: Run): Promise<boolean> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'imgflow-i386-'));
  try {
    const probe = path.join(dir, 'exit0');
    await fs.writeFile(probe, i386Exit0(), { mode: 0o700 });
    return (await run([probe], { okExitCodes: [0, 126, 127] }).catch(() => undefined))?.exitCode === 0;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const escapeBytes = (bytes: Buffer) => [...bytes].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');

/**
 * Whether the kernel runs `arch`'s binaries itself (i686 on x86_64). A binfmt_misc handler for them
 * comes before the kernel's own loader, so with one registered they run emulated whatever the
 * kernel can do; without one, a tiny program tells.
 */
async function runsItself(arch: Arch, deps: ArchDeps): Promise<boolean> {
  const dir = deps.binfmtDir ?? BINFMT_DIR;
  const wanted = await definitionOf(arch, deps.definitionDirs ?? BINFMT_DEFINITIONS).catch(() => undefined);
  if (wanted && (await exists(path.join(dir, 'register')))) {
    const sample = sampleOf(wanted);
    if ((await handlers(dir)).some((h) => h.enabled && handlerMatches(h, sample))) return false;
  }
  return (deps.runsI386 ?? kernelRunsI386)(deps.run);
}

/**
 * How this machine builds for `arch`: natively, or emulated (binfmt_misc set up as needed, and the
 * emulator named with its version). Fails in one line when an emulated build cannot run here.
 */
export async function builderPlatform(arch: Arch, deps: ArchDeps): Promise<BuildPlatform> {
  const machine = deps.machine ?? archFromUname(os.machine());
  const mode = buildMode(machine, arch);
  if (mode === 'native' && (arch === machine || (await runsItself(arch, deps)))) return { arch, machine, mode };
  const handler = await ensureEmulation(arch, deps);
  // Debian's `-binfmt-P` names refuse to run but from binfmt_misc: the emulator they link to tells its version.
  const emulator = await fs.realpath(handler.interpreter).catch(() => handler.interpreter);
  const version = (await deps.run([emulator, '--version'])).stdout.split('\n')[0]!.trim();
  return { arch, machine, mode: 'emulated', emulator: `${handler.name}: ${version}` };
}

/**
 * A builder's host activities: their facts also say how it builds for its architecture, so the
 * version a build makes records it.
 */
export function withBuildPlatform(host: HostActivities, arch: Arch, deps: ArchDeps): HostActivities {
  return {
    ...host,
    async hostFacts() {
      return { ...(await host.hostFacts()), build: await builderPlatform(arch, deps) };
    },
  };
}

/** The host path `inside` leads to in the image at `root`, its symlinks followed as they would be in a chroot. */
export async function resolveInRoot(root: string, inside: string): Promise<string> {
  let rest = inside.split('/').filter(Boolean);
  let done: string[] = [];
  for (let hops = 0; rest.length;) {
    const part = rest.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, part);
    const stat = await fs.lstat(host);
    if (!stat.isSymbolicLink()) {
      done.push(part);
      continue;
    }
    if (++hops > 40) throw new Error(`${inside} in ${root}: too many levels of symbolic links`);
    const target = await fs.readlink(host);
    if (target.startsWith('/')) done = [];
    rest = [...target.split('/').filter(Boolean), ...rest];
  }
  return path.join(root, ...done);
}

/** The architecture of an ELF file, undefined when it is none imgflow builds for. */
export async function elfArch(file: string): Promise<Arch | undefined> {
  const handle = await fs.open(file, 'r');
  try {
    const header = Buffer.alloc(20);
    const { bytesRead } = await handle.read(header, 0, 20, 0);
    if (bytesRead < 20 || header.readUInt32BE(0) !== 0x7f454c46) return undefined;
    const data = header[5]!;
    return archFromElf(data === 2 ? header.readUInt16BE(18) : header.readUInt16LE(18), header[4]!, data);
  } finally {
    await handle.close();
  }
}

/** The architecture of the image's `/bin/sh`: what its binaries are built for. */
export async function treeArch(root: string): Promise<Arch | undefined> {
  return elfArch(await resolveInRoot(root, '/bin/sh'));
}

/** Fails, naming both, when the tree's binaries are not `arch`'s. */
export async function checkTreeArch(root: string, arch: Arch): Promise<void> {
  const found = await treeArch(root);
  if (found !== arch)
    throw new Error(
      `the image's /bin/sh is ${found ? `an ${found} binary` : 'no ELF binary imgflow knows'}, not ${arch}: the bootstrap made the wrong architecture`,
    );
}
